"""scoring.monitor: PSI and drift, band summary, reason counts (pure pandas/numpy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring import monitor


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 20_000)
    assert monitor.psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    same = monitor.psi(ref, rng.normal(0, 1, 20_000))
    small = monitor.psi(ref, rng.normal(0.2, 1, 20_000))
    large = monitor.psi(ref, rng.normal(1.0, 1, 20_000))
    assert same < monitor.PSI_MODERATE < large
    assert same < small < large
    assert large > monitor.PSI_MAJOR


def test_psi_counts_nulls_as_their_own_bin():
    ref = np.array([1.0, 2.0, 3.0, 4.0] * 50)
    more_nulls = np.where(np.arange(200) % 2 == 0, np.nan, ref)
    assert monitor.psi(ref, more_nulls) > monitor.PSI_MAJOR
    # all-null reference: a single null bin on both sides
    assert monitor.psi(np.full(10, np.nan), np.full(10, np.nan)) == pytest.approx(0.0)


def test_psi_by_hand_on_two_bins():
    # the deciles collapse to the edges 0, 0.5 and 1; only two bins hold values
    ref = np.array([0.0] * 50 + [1.0] * 50)
    live = np.array([0.0] * 80 + [1.0] * 20)
    expected = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.2 - 0.5) * np.log(0.2 / 0.5)
    assert monitor.psi(ref, live) == pytest.approx(expected)


def test_drift_ranks_features_and_reads_the_shift():
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"a": rng.normal(0, 1, 5000), "b": rng.normal(0, 1, 5000)})
    live = pd.DataFrame({"a": rng.normal(0, 1, 5000), "b": rng.normal(2, 1, 5000)})
    table = monitor.drift(ref, live, ["a", "b"])
    assert table["feature"].tolist() == ["b", "a"]
    assert table["shift"].tolist() == ["major", "stable"]
    assert table.loc[0, "live_mean"] == pytest.approx(2, abs=0.1)


def test_eligible_keeps_users_active_within_the_lookback():
    live = pd.DataFrame({"user_id": ["a", "b", "c"], "days_since_last_event": [1, 28, 29]})
    assert monitor.eligible(live, 28)["user_id"].tolist() == ["a", "b"]


def _scores() -> pd.DataFrame:
    r = lambda f, c: {"feature": f, "value": 1.0, "contribution": c}  # noqa: E731
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "score": [0.9, 0.7, 0.4, 0.1],
            "risk_band": ["high", "high", "medium", "low"],
            "reasons": [
                [r("x", 2.0), r("y", 1.0)],
                [r("y", 1.5)],
                [r("x", 0.5), r("z", 0.2)],
                None,
            ],
        }
    )


def test_band_summary_counts_every_band_even_empty_ones():
    out = monitor.band_summary(_scores().iloc[:3])
    assert out.index.tolist() == ["low", "medium", "high"]
    assert out["users"].tolist() == [0, 1, 2]
    assert out["share"].sum() == pytest.approx(1.0)
    assert out.loc["high", "max_score"] == 0.9


def test_reason_counts_by_position_and_band():
    out = monitor.reason_counts(_scores()).set_index("feature")
    assert out.loc["x", "users"] == 2 and out.loc["x", "first"] == 2
    assert out.loc["y", "users"] == 2 and out.loc["y", "first"] == 1
    assert out.loc["z", "first"] == 0
    assert out.loc["x", "high"] == 1 and out.loc["x", "medium"] == 1
    assert out.loc["x", "mean_contribution"] == pytest.approx(1.25)
    assert monitor.reason_counts(_scores().iloc[3:]).empty


def test_a_kept_reference_gives_the_psi_of_the_raw_reference_and_survives_json():
    import json

    rng = np.random.default_rng(1)
    names = ["a", "b"]
    train = pd.DataFrame({"a": rng.normal(0, 1, 5000), "b": rng.poisson(3, 5000).astype(float)})
    ref = json.loads(json.dumps(monitor.reference(train, rng.random(5000), 365, names)))
    assert set(ref["bins"]) == {"a", "b", "score"} and ref["history_days"] == 365
    live = pd.DataFrame({"a": rng.normal(1.0, 1, 3000), "b": rng.poisson(3, 3000).astype(float)})
    table = monitor.drift_against(ref, live, rng.random(3000) ** 3)
    assert table["feature"].tolist()[0] in ("a", "score")
    by = dict(zip(table["feature"], table["psi"], strict=True))
    assert by["a"] == pytest.approx(monitor.psi(train["a"].to_numpy(), live["a"].to_numpy()))
    assert by["b"] < monitor.PSI_MODERATE < monitor.PSI_MAJOR < by["a"]
    assert by["score"] > monitor.PSI_MAJOR  # the live scores' shape moved
    assert monitor.drift_against(ref, live, None)["feature"].tolist().count("score") == 0
    assert dict(zip(table["feature"], table["triggers"], strict=True))["score"]


def test_only_features_that_do_not_grow_with_time_can_trigger_a_retraining():
    young, old = monitor.comparable(62), monitor.comparable(400)
    assert "n_events_30d" in young and "n_events_90d" not in young  # a window not full yet
    assert "trend_n_events_30d" in young  # 60 days: two full 30-day windows
    assert "n_events_90d" in old and "days_since_last_event" in old
    for cumulative in ("tenure_days", "n_events_lifetime", "amount_purchase_lifetime"):
        assert cumulative not in old
    assert "events_per_active_day_lifetime" in old  # a rate, not a running total
