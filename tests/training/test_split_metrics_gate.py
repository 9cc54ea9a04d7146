"""Out-of-time split, test metrics and the gate's decision, on tiny hand-made inputs."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from training.evaluate import (
    baseline_margins,
    binary_metrics,
    calibration_table,
    expected_calibration_error,
    top_fraction,
)
from training.gate import decide
from training.split import CutoffSplit, split_cutoffs, split_frame

WEEKS = [date(2024, 1, 1) + timedelta(weeks=i) for i in range(8)]


def test_latest_cutoffs_are_test_then_validation():
    got = split_cutoffs(list(reversed(WEEKS)), valid_cutoffs=2, test_cutoffs=1)
    assert got == CutoffSplit(train=tuple(WEEKS[:5]), valid=tuple(WEEKS[5:7]), test=(WEEKS[7],))


def test_too_few_cutoffs_fail_with_the_reason():
    with pytest.raises(
        ValueError, match=r"at least 3 labelled cutoffs .* got 2: 2024-01-01, 2024-01-08"
    ):
        split_cutoffs(WEEKS[:2])


def test_purge_keeps_label_windows_out_of_the_next_split():
    got = split_cutoffs(WEEKS, purge_days=14)  # a 14-day horizon spans two weekly cutoffs
    assert got == CutoffSplit(
        train=tuple(WEEKS[:4]), valid=(WEEKS[5],), test=(WEEKS[7],), purged=(WEEKS[4], WEEKS[6])
    )
    with pytest.raises(ValueError, match="after purging 28 days"):
        split_cutoffs(WEEKS[:5], purge_days=28)


def test_split_frame_assigns_rows_by_cutoff_only():
    rows = pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u1", "u1"],
            "cutoff": [WEEKS[0], WEEKS[0], WEEKS[1], WEEKS[2]],
            "churned": [1, 0, 0, 1],
        }
    )
    parts = split_frame(rows, split_cutoffs(WEEKS[:3]))
    assert parts["train"].to_dict("list") == {
        "user_id": ["u1", "u2"],
        "cutoff": [WEEKS[0]] * 2,
        "churned": [0, 1],
    }
    assert parts["valid"]["cutoff"].tolist() == [WEEKS[1]]
    assert parts["test"]["cutoff"].tolist() == [WEEKS[2]]


def test_top_decile_precision_and_lift():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # 3 of 20
    p = np.linspace(1.0, 0.05, 20)  # row order = score order: top 2 rows are [1, 0]
    precision, lift = top_fraction(y, p)
    assert precision == 0.5
    assert lift == pytest.approx(0.5 / 0.15)


def test_calibration_table_and_ece():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.05, 0.55, 0.55, 0.95, 0.95])
    table = calibration_table(y, p)
    assert table.to_dict("list") == {
        "lo": [0.0, 0.5, 0.9],
        "hi": [0.1, 0.6, 1.0],
        "n": [2, 2, 2],
        "mean_predicted": [0.05, 0.55, 0.95],
        "churn_rate": [0.0, 1.0, 0.5],
    }
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 0.45 + 0.45) / 3)


def test_binary_metrics_of_a_perfect_score_and_margins_sign():
    y = np.array([0, 0, 0, 1, 0, 1, 0, 0, 0, 0])
    perfect = binary_metrics(y, np.where(y == 1, 0.9, 0.1))
    assert perfect["roc_auc"] == perfect["pr_auc"] == 1.0
    assert perfect["precision_top_decile"] == 1.0 and perfect["lift_top_decile"] == 5.0
    assert perfect["brier"] == pytest.approx(0.01)
    flat = binary_metrics(y, np.full(10, 0.2))
    assert flat["roc_auc"] == 0.5 and flat["ece"] == pytest.approx(0.0)
    m = baseline_margins({"model": perfect, "recency": flat, "logistic": perfect})
    assert m["margin_roc_auc_vs_recency"] == 0.5
    assert m["margin_brier_vs_recency"] == pytest.approx(flat["brier"] - 0.01)  # lower is better
    assert m["margin_pr_auc_vs_logistic"] == 0.0
    with pytest.raises(ValueError, match="only label 0"):
        binary_metrics(np.zeros(4, dtype=int), np.full(4, 0.3))


FLOORS = {"roc_auc": 0.6, "lift_top_decile": 1.5}


def test_gate_without_champion_promotes_when_floors_pass():
    d = decide(
        {"roc_auc": 0.8, "lift_top_decile": 3.0},
        None,
        metric="roc_auc",
        min_improvement=0.01,
        floors=FLOORS,
    )
    assert d.promote and d.reason == "no champion yet; floors pass (roc_auc 0.8000)"
    assert d.tags()["gate.decision"] == "promoted"


def test_gate_rejects_below_a_floor_even_without_champion():
    d = decide(
        {"roc_auc": 0.58, "lift_top_decile": 1.2},
        None,
        metric="roc_auc",
        min_improvement=0.0,
        floors=FLOORS,
    )
    assert not d.promote
    assert (
        d.reason
        == "below floor: lift_top_decile 1.2000 < floor 1.5000; roc_auc 0.5800 < floor 0.6000"
    )


@pytest.mark.parametrize(("challenger", "promote"), [(0.809, False), (0.810, True), (0.85, True)])
def test_gate_needs_the_margin_over_the_champion(challenger, promote):
    d = decide(
        {"roc_auc": challenger, "lift_top_decile": 3.0},
        {"roc_auc": 0.80, "lift_top_decile": 3.0},
        metric="roc_auc",
        min_improvement=0.01,
        floors=FLOORS,
        champion_version="4",
    )
    assert d.promote is promote
    assert d.champion == 0.80 and d.champion_version == "4"
    assert ("beats champion" if promote else "does not beat champion") in d.reason
    assert "vs champion v4 0.8000 + margin 0.0100 on the same test rows" in d.reason
