"""Spine, labels and point-in-time rows on hand-built timelines."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from features.registry import FEATURE_NAMES
from training.dataset import TRAINING_COLUMNS, training_set
from training.spine import check_explicit_cutoffs, is_labelled, label, scheduled_cutoffs, spine

C1, C2 = date(2024, 3, 1), date(2024, 3, 8)
D = date  # short alias for readable timelines


def ev(user: str, day: date, event_type: str = "page_view", amount: float | None = None):
    from datetime import UTC, datetime

    return (user, event_type, datetime(day.year, day.month, day.day, 12, tzinfo=UTC), amount, None)


# Lookback 7 and horizon 7 around C1 = Mar 1 and C2 = Mar 8: each user tests one boundary.
TIMELINE = [
    ev("a", D(2024, 2, 25)),  # in [C1-7, C1): eligible at C1
    ev("a", D(2024, 3, 3)),  # active after C1: not churned at C1; eligible at C2, then silent
    ev("b", D(2024, 2, 23)),  # first day of C1's lookback (inclusive)
    ev("b", D(2024, 3, 7)),  # last day of C1's horizon (inclusive): not churned at C1
    ev("b", D(2024, 3, 15)),  # the day after C2's horizon: churned at C2 all the same
    ev("c", D(2024, 2, 22)),  # the day before C1's lookback: never eligible
    ev("d", D(2024, 3, 1)),  # on the cutoff day: not eligible at C1 (features are before C)
    ev("d", D(2024, 3, 8), "purchase", 5.0),  # on C2: not churned at C2
]


def test_spine_takes_users_active_in_the_lookback_before_each_cutoff(spark, make_daily):
    result = spine(make_daily(TIMELINE), [C2, C1], lookback_days=7)
    expected = [("a", C1), ("b", C1), ("a", C2), ("b", C2), ("d", C2)]
    assertDataFrameEqual(result, spark.createDataFrame(expected, "user_id string, cutoff date"))


def test_label_is_no_active_day_in_the_horizon_from_the_cutoff(spark, make_daily):
    daily = make_daily(TIMELINE)
    result = label(daily, spine(daily, [C1, C2], lookback_days=7), horizon_days=7)
    expected = [("a", C1, 0), ("b", C1, 0), ("a", C2, 1), ("b", C2, 1), ("d", C2, 0)]
    assertDataFrameEqual(
        result, spark.createDataFrame(expected, "user_id string, cutoff date, churned int")
    )


def test_horizon_of_many_months(spark, make_daily):
    cutoff = date(2024, 1, 1)
    rows = [ev(u, cutoff - timedelta(days=3)) for u in ("stays", "returns-late", "gone")]
    rows += [
        ev("stays", cutoff + timedelta(days=179)),  # last day of a 180-day horizon
        ev("returns-late", cutoff + timedelta(days=180)),  # first day after it
    ]
    daily = make_daily(rows)
    result = label(daily, spine(daily, [cutoff], lookback_days=30), horizon_days=180)
    expected = [("stays", cutoff, 0), ("returns-late", cutoff, 1), ("gone", cutoff, 1)]
    assertDataFrameEqual(
        result, spark.createDataFrame(expected, "user_id string, cutoff date, churned int")
    )


def test_scheduled_cutoffs_count_back_from_the_latest_labelled_one():
    got = scheduled_cutoffs(
        D(2024, 1, 1), D(2024, 3, 16), horizon_days=7, step_days=7, min_history_days=28
    )
    assert got == [
        D(2024, 2, 3),
        D(2024, 2, 10),
        D(2024, 2, 17),
        D(2024, 2, 24),
        D(2024, 3, 2),
        D(2024, 3, 9),
    ]
    assert is_labelled(got[-1], D(2024, 3, 16), 7)
    assert not is_labelled(got[-1] + timedelta(days=1), D(2024, 3, 16), 7)
    latest3 = scheduled_cutoffs(
        D(2024, 1, 1),
        D(2024, 3, 16),
        horizon_days=7,
        step_days=7,
        min_history_days=28,
        max_cutoffs=3,
    )
    assert latest3 == got[-3:]


def test_scheduled_cutoffs_with_a_six_month_horizon_are_all_labelled():
    data_end = D(2024, 12, 10)
    got = scheduled_cutoffs(D(2023, 1, 1), data_end, horizon_days=182, step_days=30)
    assert got[-1] == data_end - timedelta(days=182) == D(2024, 6, 11)
    assert got[0] >= D(2023, 1, 1) and len(got) == 18
    assert all(is_labelled(c, data_end, 182) for c in got)
    assert not scheduled_cutoffs(D(2024, 10, 1), data_end, horizon_days=182, step_days=7)


def test_explicit_cutoffs_must_have_an_elapsed_horizon():
    assert check_explicit_cutoffs([C2, C1, C1], D(2024, 3, 16), 7) == [C1, C2]
    with pytest.raises(ValueError, match="cutoffs 2024-03-10: their 7-day label window"):
        check_explicit_cutoffs([C1, D(2024, 3, 10)], D(2024, 3, 16), 7)


def test_training_rows_join_labels_and_features_as_of_the_cutoff(spark, make_daily):
    result = training_set(make_daily(TIMELINE), [C1, C2], lookback_days=7, horizon_days=7)
    assert tuple(result.columns) == TRAINING_COLUMNS
    assert {result.schema[n].dataType.simpleString() for n in FEATURE_NAMES} == {"double"}
    checked = result.select(
        "user_id",
        "cutoff",
        "churned",
        "days_since_last_event",
        "n_events_7d",
        "n_purchase_lifetime",
        "tenure_days",
    )
    expected = [
        ("a", C1, 0, 5.0, 1.0, 0.0, 5.0),
        ("b", C1, 0, 7.0, 1.0, 0.0, 7.0),
        ("a", C2, 1, 5.0, 1.0, 0.0, 12.0),
        ("b", C2, 1, 1.0, 1.0, 0.0, 14.0),
        ("d", C2, 0, 7.0, 1.0, 0.0, 7.0),  # d's purchase on C2 is not a feature at C2
    ]
    assertDataFrameEqual(checked, spark.createDataFrame(expected, checked.schema))


def test_leakage_guard_events_after_the_cutoff_change_no_feature(spark, make_daily):
    """Adding events on or after the cutoff (for known and new users) changes labels only."""
    later = [
        ev("a", C1, "purchase", 999.0),  # on the cutoff day
        ev("a", D(2024, 3, 5), "support_contact"),
        ev("b", D(2024, 3, 2), "refund", 3.0),
        ev("e", D(2024, 3, 4)),  # a new user after C1
    ]
    base = training_set(make_daily(TIMELINE), [C1], lookback_days=7, horizon_days=7)
    more = training_set(make_daily(TIMELINE + later), [C1], lookback_days=7, horizon_days=7)
    keys_and_features = ["user_id", "cutoff", *FEATURE_NAMES]
    assertDataFrameEqual(more.select(*keys_and_features), base.select(*keys_and_features))
    # ...while the rows' labels do see the future (that is their job).
    silent = [ev("a", D(2024, 2, 26)), ev("q", D(2024, 2, 26))]
    quiet = training_set(make_daily(silent), [C1], lookback_days=7, horizon_days=7)
    woken = training_set(
        make_daily([*silent, ev("q", D(2024, 3, 6))]), [C1], lookback_days=7, horizon_days=7
    )
    assertDataFrameEqual(
        woken.select("user_id", "churned"),
        quiet.select("user_id", F.when(F.col("user_id") == "q", 0).otherwise(1).alias("churned")),
    )
