"""scoring.realised: a hand-built case whose realised performance is worked out by hand.

Ten users scored by one model version on 2024-03-10, labels over a 7-day horizon from a
hand-written activity log; the scores' ROC-AUC, top-decile precision and lift, and the
calibration by band are counted on paper in the comments.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from scoring.realised import (
    below_floor,
    is_matured,
    measure,
    realised_table,
    scores_by_day,
    with_labels,
)
from scoring.sink import to_spark
from training.gate import decide

DAY = date(2024, 3, 10)
HORIZON = 7
# user: (score, band, churned). Churned users: u0, u1, u3, u6.
USERS = {
    "u0": (0.90, "high", 1),
    "u1": (0.80, "high", 1),
    "u2": (0.70, "high", 0),
    "u3": (0.65, "high", 1),
    "u4": (0.50, "medium", 0),
    "u5": (0.40, "medium", 0),
    "u6": (0.30, "medium", 1),
    "u7": (0.20, "low", 0),
    "u8": (0.10, "low", 0),
    "u9": (0.05, "low", 0),
}
# Pairs (churned, stayed) ranked right: u0 and u1 above all 6 stayers, u3 above 5 (not u2),
# u6 above 3 (u7, u8, u9): 20 of 4 x 6 = 24.
AUC = 20 / 24
# Top decile = ceil(10%) = 1 row, u0, churned: precision 1; lift 1 / (4 / 10) = 2.5.
# By band: high  mean (.9 + .8 + .7 + .65) / 4 = .7625, churn 3/4
#          medium mean (.5 + .4 + .3) / 3 = .4,        churn 1/3
#          low    mean (.2 + .1 + .05) / 3 = 0.11667,  churn 0
EXPECTED = {
    "users": 10,
    "churned": 4,
    "churn_rate": 0.4,
    "mean_score": 0.46,
    "roc_auc": AUC,
    "precision_top_decile": 1.0,
    "lift_top_decile": 2.5,
    "users_high": 4,
    "mean_score_high": 0.7625,
    "churn_rate_high": 0.75,
    "users_medium": 3,
    "mean_score_medium": 0.4,
    "churn_rate_medium": 1 / 3,
    "users_low": 3,
    "mean_score_low": 0.35 / 3,
    "churn_rate_low": 0.0,
}


def test_the_measures_of_the_hand_built_day():
    score = np.array([s for s, _, _ in USERS.values()])
    band = np.array([b for _, b, _ in USERS.values()])
    churned = np.array([c for _, _, c in USERS.values()])
    got = measure(churned, score, band)
    assert got == pytest.approx(EXPECTED)


def test_one_class_only_has_no_roc_auc_and_an_empty_band_no_rate():
    got = measure(np.array([0, 0]), np.array([0.2, 0.1]), np.array(["low", "low"]))
    assert np.isnan(got["roc_auc"]) and got["users_high"] == 0
    assert np.isnan(got["mean_score_high"]) and np.isnan(got["churn_rate_high"])


def test_a_day_is_measured_once_its_whole_horizon_is_in_the_data():
    # data_end is the last day in the table + 1: labels need days DAY .. DAY + 6.
    assert is_matured(DAY, DAY + timedelta(days=HORIZON), HORIZON)
    assert not is_matured(DAY, DAY + timedelta(days=HORIZON - 1), HORIZON)


def score_rows(rows: list[tuple]) -> pd.DataFrame:
    """churn_scores rows from (user, score, band, status, model_version, as_of, features_version)."""
    return pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "score": [r[1] for r in rows],
            "risk_band": [r[2] for r in rows],
            "status": [r[3] for r in rows],
            "model_name": "m",
            "model_version": [r[4] for r in rows],
            "features_as_of": [r[5] for r in rows],
            "features_version": [r[6] for r in rows],
            "scored_at": [datetime(2024, 3, 10, 1) + timedelta(minutes=r[6]) for r in rows],
            "reasons": [None] * len(rows),
        }
    )


def activity(user: str, *days: int) -> list[tuple]:
    """Daily rows of a user active on DAY + each of ``days``."""
    return [(user, DAY + timedelta(days=d), 3) for d in days]


def test_scores_meet_the_label_of_the_same_user_at_the_same_as_of_date(spark):
    """The Spark side: the day's last score per user and version, lapsed records left out,
    labels from the activity log at that day; then the measures are the hand-worked ones."""
    rows = [(u, s, b, "scored", 1, DAY, 5) for u, (s, b, _) in USERS.items()]
    rows += [
        # earlier the same day u0 had a low score: the day's last one counts
        ("u0", 0.05, "low", "scored", 1, DAY, 4),
        # a lapsed record is not a score
        ("u10", None, None, "lapsed", 1, DAY, 5),
        # the day before, and another version the same day: rows of their own
        ("u2", 0.95, "high", "scored", 1, DAY - timedelta(days=1), 3),
        ("u2", 0.25, "low", "scored", 2, DAY, 6),
    ]
    daily = []
    for user, (_, _, churned) in USERS.items():
        # everyone was active the day before; stayers come back within the horizon, at
        # its edges for u2 (day 0) and u4 (day 6); u6 comes back at day 7, one day late
        daily += activity(user, -1)
        if not churned:
            daily += activity(user, {"u2": 0, "u4": HORIZON - 1}.get(user, 3))
    daily += activity("u6", HORIZON)
    daily += activity("u10", -20)
    daily_df = spark.createDataFrame(daily, "user_id string, activity_date date, n_events long")

    scored = scores_by_day(to_spark(spark, score_rows(rows)))
    labelled = with_labels(scored, daily_df, HORIZON).toPandas()
    assert "u10" not in set(labelled["user_id"])
    by_key = labelled.set_index(["features_as_of", "model_version", "user_id"])
    assert by_key.loc[(DAY, 1, "u0"), "score"] == 0.90
    assert by_key.loc[(DAY, 2, "u2"), "churned"] == 0
    assert by_key.loc[(DAY - timedelta(days=1), 1, "u2"), "churned"] == 0  # active on DAY

    table = realised_table(labelled, {("m", 1): HORIZON, ("m", 2): HORIZON}, pd.Timestamp(0))
    assert list(zip(table["features_as_of"], table["model_version"], strict=True)) == [
        (DAY - timedelta(days=1), 1),
        (DAY, 1),
        (DAY, 2),
    ]
    day = table.iloc[1]
    assert {k: day[k] for k in EXPECTED} == pytest.approx(EXPECTED)
    assert day["horizon_days"] == HORIZON


def table_of(auc: float, users: int = 500, day: date = DAY) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "features_as_of": [day],
            "model_name": ["m"],
            "model_version": [3],
            "horizon_days": [28],
            "users": [users],
            "churned": [50],
            "roc_auc": [auc],
        }
    )


def test_the_champion_below_the_floor_on_its_newest_day_is_a_breach():
    two_days = pd.concat([table_of(0.5, day=DAY - timedelta(days=1)), table_of(0.7)])
    assert below_floor(two_days, ("m", 3), 0.6, min_users=100) == ""  # the newest is fine
    reason = below_floor(
        pd.concat([table_of(0.7), table_of(0.55, day=DAY + timedelta(1))]),
        ("m", 3),
        0.6,
        min_users=100,
    )
    assert reason == (
        "realised ROC-AUC of m v3 0.5500 < floor 0.6000 on its scores as of 2024-03-11 "
        "(500 users, 50 churned within 28 days)"
    )
    assert below_floor(table_of(0.55), ("m", 4), 0.6, min_users=100) == ""  # not the champion
    assert below_floor(table_of(0.55, users=99), ("m", 3), 0.6, min_users=100) == ""
    assert below_floor(table_of(float("nan")), ("m", 3), 0.6, min_users=100) == ""


def test_a_gate_after_a_realised_breach_waives_the_margin_and_says_why():
    why = "realised ROC-AUC of m v3 0.5500 < floor 0.6000 on its scores as of 2024-03-11"
    args = dict(metric="roc_auc", min_improvement=0.02, floors={"roc_auc": 0.6})
    challenger, champion = {"roc_auc": 0.71}, {"roc_auc": 0.70}
    usual = decide(challenger, champion, champion_version="3", **args)
    assert not usual.promote  # 0.71 < 0.70 + 0.02
    failing = decide(challenger, champion, champion_version="3", champion_failing=why, **args)
    assert failing.promote
    assert failing.reason == (
        f"the champion failed in production ({why}) (margin waived); beats champion: "
        "roc_auc 0.7100 vs champion v3 0.7000 + margin 0.0000 on the same test rows"
    )
    worse = decide({"roc_auc": 0.65}, champion, champion_version="3", champion_failing=why, **args)
    assert not worse.promote and worse.reason.startswith("the champion failed in production (")
    below = decide({"roc_auc": 0.55}, champion, champion_version="3", champion_failing=why, **args)
    assert not below.promote and "below floor: roc_auc 0.5500 < floor 0.6000" in below.reason
