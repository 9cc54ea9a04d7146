"""score_frame, reasons, record ids and the emission policy: pure pandas, no Spark."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from features.registry import FEATURE_NAMES
from scoring.score import (
    OUTPUT_COLUMNS,
    ScoringModel,
    ScoringRules,
    emitted,
    feature_matrix,
    in_population,
    lapse_frame,
    score_frame,
    top_reasons,
)
from tests.scoring.models import model, scoring_input, vectors

RULES = ScoringRules(band_medium=0.3, band_high=0.6, reasons_for_bands=("medium", "high"))


@pytest.fixture(scope="module")
def recency() -> ScoringModel:
    return model("recency", version=4)


def test_bands_at_their_thresholds():
    got = RULES.bands(np.array([0.0, 0.2999, 0.3, 0.5999, 0.6, 1.0]))
    assert got.tolist() == ["low", "low", "medium", "medium", "high", "high"]


def test_rules_refuse_unordered_bands_and_unknown_band_names():
    with pytest.raises(ValueError, match="band_medium < band_high"):
        ScoringRules(band_medium=0.6, band_high=0.3)
    with pytest.raises(ValueError, match="unknown bands"):
        ScoringRules(reasons_for_bands=("severe",))


def test_score_frame_scores_bands_and_lineage(recency):
    inputs = scoring_input(vectors(50, seed=1))
    out = score_frame(recency, inputs, RULES)
    x = inputs[FEATURE_NAMES].to_numpy(np.float64)
    expected_scores = recency.booster.predict(x)
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    np.testing.assert_array_equal(out["score"].to_numpy(), expected_scores)
    assert out["risk_band"].tolist() == RULES.bands(expected_scores).tolist()
    assert set(out["risk_band"]) == {"low", "medium", "high"}, "the fixture should span bands"
    assert out["user_id"].tolist() == inputs["user_id"].tolist()
    assert set(out["model_name"]) == {"test-model"} and set(out["model_version"]) == {4}
    assert set(out["features_as_of"]) == {date(2024, 3, 6)}
    assert set(out["features_version"]) == {3}
    assert set(out["scored_at"]) == {pd.Timestamp(datetime(2024, 3, 6, 1, 2, 3))}


def test_reasons_only_for_configured_bands_and_only_positive(recency):
    out = score_frame(recency, scoring_input(vectors(80, seed=2)), RULES)
    explained = out["risk_band"].isin(["medium", "high"])
    assert out.loc[~explained, "reasons"].isna().all()
    for reasons in out.loc[explained, "reasons"]:
        contributions = [r["contribution"] for r in reasons]
        assert 1 <= len(reasons) <= 3
        assert all(c > 0 for c in contributions)
        assert contributions == sorted(contributions, reverse=True)
    none = score_frame(
        recency, scoring_input(vectors(80, seed=2)), ScoringRules(reasons_for_bands=())
    )
    assert none["reasons"].isna().all()


def test_a_quiet_user_is_high_risk_because_of_recency(recency):
    """Model behaviour: a user away for 30 days scores higher, and recency is the top reason."""
    active = vectors(1, seed=3).assign(days_since_last_event=1.0)
    quiet = active.assign(days_since_last_event=30.0)
    out = score_frame(recency, scoring_input(pd.concat([active, quiet])), RULES)
    assert out["score"][1] > out["score"][0]
    assert out["risk_band"][1] == "high"
    top = out["reasons"][1][0]
    assert (top["feature"], top["value"]) == ("days_since_last_event", 30.0)


def test_top_reasons_picks_the_largest_positive_contributions():
    names = ["a", "b", "c", "d", "e"]
    contrib = np.array(
        [
            [0.1, -0.5, 0.4, 0.2, 0.05, 9.9],  # last column: the bias, never a reason
            [-0.1, -0.2, 0.3, -0.3, 0.0, 0.0],
            [-1.0, -1.0, -1.0, -1.0, -1.0, 5.0],
        ]
    )
    x = np.array([[1, 2, np.nan, 4, 5], [6, 7, 8, 9, 10], [0, 0, 0, 0, 0]], dtype=float)
    assert top_reasons(contrib, x, names) == [
        [
            {"feature": "c", "value": None, "contribution": 0.4},
            {"feature": "d", "value": 4.0, "contribution": 0.2},
            {"feature": "a", "value": 1.0, "contribution": 0.1},
        ],
        [{"feature": "c", "value": 8.0, "contribution": 0.3}],
        [],
    ]


def test_record_id_names_user_as_of_model_and_feature_values(recency):
    base = scoring_input(vectors(3, seed=4))
    ids = score_frame(recency, base, RULES)["record_id"]
    # Lineage that is not an input (table version, commit time) does not change the id:
    # the stream and the batch job name the same score the same way.
    same = score_frame(
        recency,
        base.assign(features_version=99, features_committed_at=pd.Timestamp("2030-01-01")),
        RULES,
    )["record_id"]
    assert ids.tolist() == same.tolist()
    assert ids.str.len().eq(32).all() and ids.is_unique
    changed = {
        "feature value": score_frame(recency, base.assign(tenure_days=999.0), RULES),
        "as_of": score_frame(recency, base.assign(as_of=date(2024, 3, 7)), RULES),
        "model version": score_frame(ScoringModel(recency.name, 5, recency.booster), base, RULES),
    }
    for what, other in changed.items():
        assert not set(other["record_id"]) & set(ids), what


def test_feature_matrix_is_float64_in_schema_order_and_names_missing_columns():
    frame = vectors(2)[list(reversed(FEATURE_NAMES))].astype({"tenure_days": "Int64"})
    x = feature_matrix(frame)
    assert x.dtype == np.float64 and x.flags.c_contiguous
    np.testing.assert_array_equal(x[:, 0], frame[FEATURE_NAMES[0]].to_numpy(np.float64))
    with pytest.raises(KeyError, match="tenure_days"):
        feature_matrix(frame.drop(columns=["tenure_days"]))


def test_empty_input_gives_empty_output(recency):
    out = score_frame(recency, scoring_input(vectors(0)), RULES)
    assert out.empty and list(out.columns) == list(OUTPUT_COLUMNS)


def test_the_population_is_the_training_spines_and_lapsed_records_carry_no_score(recency):
    x = scoring_input(vectors(5)).assign(days_since_last_event=[1.0, 27.0, 28.0, 29.0, np.nan])
    # Eligible at as_of: an active day in [as_of - 28, as_of), i.e. at most 28 days ago.
    assert in_population(x, 28).tolist() == [True, True, True, False, False]
    assert in_population(x, None).all()  # a model without a lookback scores everyone
    out = lapse_frame(recency, x[3:])
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert out["status"].tolist() == ["lapsed"] * 2 and out["score"].isna().all()
    assert out["risk_band"].isna().all() and out["reasons"].isna().all()
    assert out["features_as_of"].tolist() == [date(2024, 3, 6)] * 2
    assert out["record_id"].tolist() == lapse_frame(recency, x[3:])["record_id"].tolist()
    assert out["record_id"].nunique() == 2
    assert not set(out["record_id"]) & set(score_frame(recency, x[3:], RULES)["record_id"])


def test_emission_every_and_changed():
    scored = pd.DataFrame(
        {
            "user_id": ["new", "same", "moved", "exactly", "crossed"],
            "score": [0.10, 0.20, 0.45, 0.25, 0.31],
            "risk_band": ["low", "low", "medium", "low", "medium"],
        }
    )
    previous = pd.DataFrame(
        {
            "user_id": ["same", "moved", "exactly", "crossed"],
            "score": [0.21, 0.35, 0.20, 0.29],
            "risk_band": ["low", "medium", "low", "low"],
        }
    )
    every = emitted(scored, previous, policy="every", min_delta=0.05)
    assert every.tolist() == [True] * 5
    changed = emitted(scored, previous, policy="changed", min_delta=0.05)
    assert changed.tolist() == [True, False, True, True, True]
    with pytest.raises(ValueError, match="unknown emission policy"):
        emitted(scored, previous, policy="sometimes", min_delta=0.05)
