from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from features.aggregates import DAILY_KEY, LIFETIME_KEY, daily_activity
from features.compute import (
    FEATURES_SCHEMA,
    compute_features,
    features_in_memory,
    lifetime_as_of,
)
from features.docs import DOCS_PATH, render_feature_docs
from features.registry import FEATURE_DTYPES, FEATURE_NAMES, FEATURES

AS_OF = date(2024, 4, 1)
EVENTS_SCHEMA = (
    "user_id string, event_type string, event_time timestamp, amount double, quantity int"
)


def days_before(n: int, hour: int = 12) -> datetime:
    """A moment n days before AS_OF (n = 1 is the day before)."""
    d = AS_OF - timedelta(days=n)
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


# u-a: a hand-built timeline hitting every window boundary; u-b: quiet for 122 days.
TIMELINE = [
    ("u-a", "session_start", days_before(1), None, None),
    ("u-a", "page_view", days_before(1), None, None),
    ("u-a", "purchase", days_before(1), 10.0, 1),
    ("u-a", "session_start", days_before(7), None, None),  # first day of the 7d window
    ("u-a", "page_view", days_before(7), None, None),
    ("u-a", "page_view", days_before(7), None, None),
    ("u-a", "session_start", days_before(8), None, None),  # previous 7d window
    ("u-a", "purchase", days_before(30), 30.0, 2),  # first day of the 30d window
    ("u-a", "refund", days_before(30), 5.0, None),
    ("u-a", "page_view", days_before(31), None, None),  # 90d only
    ("u-a", "session_start", days_before(91), None, None),  # lifetime only
    ("u-a", "purchase", days_before(91), 100.0, 1),
    ("u-b", "page_view", days_before(122), None, None),
]
# Events on or after AS_OF, for known users and a new one: must not change any feature.
FUTURE = [
    ("u-a", "purchase", datetime(2024, 4, 1, 0, 0, tzinfo=UTC), 999.0, 9),
    ("u-a", "support_contact", datetime(2024, 4, 1, 23, 59, tzinfo=UTC), None, None),
    ("u-b", "session_start", datetime(2024, 4, 3, tzinfo=UTC), None, None),
    ("u-d", "page_view", datetime(2024, 4, 2, tzinfo=UTC), None, None),
]


def features_as_of(spark: SparkSession, rows: list[tuple], as_of: date = AS_OF) -> DataFrame:
    daily = daily_activity(spark.createDataFrame(rows, EVENTS_SCHEMA))
    return compute_features(daily, lifetime_as_of(daily, as_of), as_of)


def test_output_schema_is_user_id_as_of_and_the_registry(spark):
    result = features_as_of(spark, TIMELINE)
    assert result.columns == ["user_id", "as_of", *FEATURE_NAMES]
    assert dict(result.dtypes) == {"user_id": "string", "as_of": "date", **FEATURE_DTYPES}
    assert 60 <= len(FEATURE_NAMES) <= 100
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


CHECKED = [
    "n_events_1d", "n_events_7d", "n_events_30d", "n_events_90d", "n_events_lifetime",
    "n_purchase_1d", "n_purchase_30d", "n_purchase_lifetime", "n_session_start_7d",
    "active_days_7d", "active_days_30d", "active_days_90d", "n_active_days_lifetime",
    "amount_purchase_30d", "mean_purchase_amount_30d", "amount_refund_30d",
    "refund_amount_ratio_90d", "amount_purchase_lifetime", "mean_purchase_amount_lifetime",
    "n_items_purchased_30d", "events_per_session_7d", "trend_n_events_7d",
    "trend_n_events_30d", "trend_n_session_start_7d", "days_since_last_event",
    "days_since_last_purchase", "days_since_last_session", "tenure_days",
    "active_day_ratio_lifetime",
]  # fmt: skip


def test_compute_features_on_a_hand_built_timeline(spark):
    result = features_as_of(spark, TIMELINE).select("user_id", "as_of", *CHECKED)
    u_a = (
        3, 6, 9, 10, 12,  # n_events 1d/7d/30d/90d/lifetime
        1, 2, 3, 2,  # n_purchase 1d/30d/lifetime, n_session_start_7d
        2, 4, 5, 6,  # active days 7d/30d/90d/lifetime
        40.0, 20.0, 5.0, 5.0 / 40.0, 140.0, 140.0 / 3,  # monetary
        3,  # n_items_purchased_30d
        6 / 2,  # events per session 7d
        (6 - 1) / (6 + 1), (9 - 1) / (9 + 1), (2 - 1) / (2 + 1),  # trends
        1, 1, 1, 91,  # recency, tenure (2024-01-01 -> 2024-04-01)
        6 / 91,
    )  # fmt: skip
    u_b = (
        0, 0, 0, 0, 1,
        0, 0, 0, 0,
        0, 0, 0, 1,
        0.0, None, 0.0, None, 0.0, None,
        0,
        None,
        0.0, 0.0, 0.0,
        122, None, None, 122,
        1 / 122,
    )  # fmt: skip
    expected = spark.createDataFrame([("u-a", AS_OF, *u_a), ("u-b", AS_OF, *u_b)], result.schema)
    assertDataFrameEqual(result, expected)


def test_quiet_user_gets_zero_counts_in_every_window(spark):
    window_counts = [f.name for f in FEATURES if f.window_days and f.dtype == "bigint"]
    result = features_as_of(spark, TIMELINE).where("user_id = 'u-b'").select(*window_counts)
    assertDataFrameEqual(result, [tuple(0 for _ in window_counts)])


def test_events_on_or_after_as_of_change_no_feature(spark):
    before = features_as_of(spark, TIMELINE)
    assertDataFrameEqual(features_as_of(spark, TIMELINE + FUTURE), before)
    # compute_features itself ignores daily rows on/after as_of (lifetime built correctly)
    daily_all = daily_activity(spark.createDataFrame(TIMELINE + FUTURE, EVENTS_SCHEMA))
    daily_past = daily_activity(spark.createDataFrame(TIMELINE, EVENTS_SCHEMA))
    with_future_daily = compute_features(daily_all, lifetime_as_of(daily_past, AS_OF), AS_OF)
    assertDataFrameEqual(with_future_daily, before)


def test_features_move_with_as_of(spark):
    # the guard above would pass trivially if features ignored the data; a day later they move
    later = features_as_of(spark, TIMELINE + FUTURE, AS_OF + timedelta(days=1))
    assertDataFrameEqual(
        later.select("user_id", "n_events_1d", "n_purchase_1d", "days_since_last_event"),
        [("u-a", 2, 1, 1), ("u-b", 0, 0, 123)],
    )


def simulated(days: int) -> list[tuple]:
    from sources.simulator import SimulationConfig, simulate

    sim = SimulationConfig(n_users=120, days=days, start=AS_OF - timedelta(days=days - 3), seed=5)
    return [
        (
            e["user_id"],
            e["event_type"],
            datetime.fromisoformat(e["event_time"]),
            e["properties"].get("amount"),
            e["properties"].get("quantity"),
        )
        for e in simulate(sim)
    ]


@pytest.mark.parametrize("as_of", [AS_OF, AS_OF - timedelta(days=40)])
def test_features_in_memory_equal_compute_features(spark, as_of):
    """The stream's evaluation of the registry (numpy, no Spark) against the Spark one: every
    feature, every user, null for null, on simulated months plus the hand-built timeline and
    events on or after as_of (which neither may read)."""
    from store.state import frame, nullable  # the stream's state frames: key in the index

    rows = simulated(150) + TIMELINE + FUTURE
    daily = daily_activity(spark.createDataFrame(rows, EVENTS_SCHEMA)).persist()
    lifetime = lifetime_as_of(daily, as_of).persist()
    theirs = compute_features(daily, lifetime, as_of).toArrow()
    ours = features_in_memory(
        frame(daily.toArrow(), DAILY_KEY), frame(lifetime.toArrow(), LIFETIME_KEY), as_of
    )
    assert ours.schema == FEATURES_SCHEMA == nullable(theirs.schema.remove_metadata())
    assert ours.num_rows == theirs.num_rows > 100

    def ordered(t) -> pd.DataFrame:
        return t.to_pandas().sort_values("user_id", ignore_index=True)

    expected = ordered(theirs)
    assert expected["trend_n_events_7d"].abs().lt(1).any()  # the data reach every branch
    assert expected["mean_purchase_amount_30d"].isna().any()
    assert expected["days_since_last_purchase"].isna().any()
    pd.testing.assert_frame_equal(ordered(ours), expected, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("name", ["n_purchase_7d", "amount_purchase_30d", "tenure_days"])
def test_registry_has_the_named_features(name):
    assert name in FEATURE_NAMES


def test_features_doc_is_fresh():
    assert DOCS_PATH.read_text(encoding="utf-8") == render_feature_docs(), (
        "docs/features.md is stale: run `python -m features.docs`"
    )
