from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from features.aggregates import (
    DAILY_ADD_COLUMNS,
    DAILY_COLUMNS,
    DAILY_KEY,
    DAILY_MAX_COLUMNS,
    DAILY_MIN_COLUMNS,
    LIFETIME_ADD_COLUMNS,
    LIFETIME_COLUMNS,
    LIFETIME_KEY,
    LIFETIME_MAX_COLUMNS,
    LIFETIME_MIN_COLUMNS,
    daily_activity,
    daily_in_memory,
    lifetime_aggregates,
    lifetime_in_memory,
    merge_daily,
    merge_lifetime,
)
from features.events import EVENT_TYPES

EVENTS_SCHEMA = (
    "user_id string, event_type string, event_time timestamp, amount double, quantity int"
)


def ts(day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, minute, tzinfo=UTC)


def events_df(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, EVENTS_SCHEMA)


def daily_row(user: str, day: date, first: datetime, last: datetime, **values: float) -> tuple:
    """A daily_activity row: every additive column 0 unless given."""
    unknown = set(values) - set(DAILY_ADD_COLUMNS)
    assert not unknown, unknown
    adds = [values.get(c, 0.0 if c.startswith("amount") else 0) for c in DAILY_ADD_COLUMNS]
    return (user, day, *adds, first, last)


def daily_schema() -> str:
    types = {"user_id": "string", "activity_date": "date"}
    types |= {c: "double" if c.startswith("amount") else "bigint" for c in DAILY_ADD_COLUMNS}
    types |= {c: "timestamp" for c in (*DAILY_MIN_COLUMNS, *DAILY_MAX_COLUMNS)}
    return ", ".join(f"{c} {types[c]}" for c in DAILY_COLUMNS)


EVENTS_A = [
    ("u-1", "session_start", ts(1, 9), None, None),
    ("u-1", "page_view", ts(1, 9, 5), None, None),
    ("u-1", "purchase", ts(1, 9, 10), 19.5, 2),
    ("u-1", "purchase", ts(1, 23, 59), 0.25, None),  # no quantity: one item
    ("u-1", "refund", ts(2, 0, 1), 19.5, None),  # next UTC day
    ("u-2", "support_contact", ts(1, 8), None, None),
]
EVENTS_B = [
    ("u-1", "purchase", ts(1, 7), 4.0, 3),  # earlier on a day A already has
    ("u-1", "page_view", ts(3), None, None),
    ("u-3", "subscription_cancel", ts(2), None, None),
]


def test_daily_activity_counts_and_sums_per_user_and_utc_day(spark):
    daily = daily_activity(events_df(spark, EVENTS_A))
    expected = [
        daily_row(
            "u-1",
            date(2024, 3, 1),
            ts(1, 9),
            ts(1, 23, 59),
            n_session_start=1,
            n_page_view=1,
            n_purchase=2,
            n_events=4,
            amount_purchase=19.75,
            n_items_purchased=3,
        ),
        daily_row(
            "u-1",
            date(2024, 3, 2),
            ts(2, 0, 1),
            ts(2, 0, 1),
            n_refund=1,
            n_events=1,
            amount_refund=19.5,
        ),
        daily_row("u-2", date(2024, 3, 1), ts(1, 8), ts(1, 8), n_support_contact=1, n_events=1),
    ]
    assert tuple(daily.columns) == DAILY_COLUMNS
    assert {f"n_{t}" for t in EVENT_TYPES} <= set(DAILY_ADD_COLUMNS)
    assertDataFrameEqual(daily, spark.createDataFrame(expected, daily_schema()))


def test_merge_daily_of_two_batches_equals_daily_activity_of_their_union(spark):
    a, b = events_df(spark, EVENTS_A), events_df(spark, EVENTS_B)
    merged = merge_daily(daily_activity(a), daily_activity(b))
    assertDataFrameEqual(merged, daily_activity(a.unionByName(b)))
    # and the overlapping day really combined: first = min, counts add
    assertDataFrameEqual(
        merged.where("user_id = 'u-1' AND activity_date = DATE'2024-03-01'").select(
            "n_purchase", "amount_purchase", "n_items_purchased", "first_event_time"
        ),
        spark.createDataFrame(
            [(3, 23.75, 6, ts(1, 7))],
            "n_purchase bigint, amount_purchase double, n_items_purchased bigint, "
            "first_event_time timestamp",
        ),
    )


LIFETIME_TYPES = {
    "user_id": "string",
    "first_active_date": "date",
    "last_active_date": "date",
    "last_purchase_date": "date",
    "last_session_date": "date",
    "first_event_time": "timestamp",
    "last_event_time": "timestamp",
}


def lifetime_schema() -> str:
    types = LIFETIME_TYPES | {
        c: "double" if c.startswith("amount") else "bigint" for c in LIFETIME_ADD_COLUMNS
    }
    return ", ".join(f"{c} {types[c]}" for c in LIFETIME_COLUMNS)


def test_lifetime_aggregates_per_user(spark):
    daily = daily_activity(events_df(spark, EVENTS_A + EVENTS_B))
    lifetime = lifetime_aggregates(daily)
    counts = {c: 0 for c in DAILY_ADD_COLUMNS} | {"amount_purchase": 0.0, "amount_refund": 0.0}

    def row(user, first, last, last_purchase, last_session, first_ts, last_ts, **values):
        adds = {"n_active_days": values.pop("n_active_days")} | counts | values
        return (
            user,
            first,
            last,
            last_purchase,
            last_session,
            *[adds[c] for c in LIFETIME_ADD_COLUMNS],
            first_ts,
            last_ts,
        )

    d1, d2, d3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)
    expected = [
        row(
            "u-1", d1, d3, d1, d1, ts(1, 7), ts(3),
            n_active_days=3, n_session_start=1, n_page_view=2, n_purchase=3, n_refund=1,
            n_events=7, amount_purchase=23.75, amount_refund=19.5, n_items_purchased=6,
        ),
        row(
            "u-2", d1, d1, None, None, ts(1, 8), ts(1, 8),
            n_active_days=1, n_support_contact=1, n_events=1,
        ),
        row(
            "u-3", d2, d2, None, None, ts(2), ts(2),
            n_active_days=1, n_subscription_cancel=1, n_events=1,
        ),
    ]  # fmt: skip
    assert set(LIFETIME_COLUMNS) == {
        "user_id",
        *LIFETIME_ADD_COLUMNS,
        *LIFETIME_MIN_COLUMNS,
        *LIFETIME_MAX_COLUMNS,
    }
    assertDataFrameEqual(lifetime, spark.createDataFrame(expected, lifetime_schema()))


def test_daily_in_memory_equals_daily_activity(spark):
    """The stream's pandas evaluation against the Spark one, schema for schema and value for
    value: null amounts count 0, a purchase without a quantity one item, days in UTC."""
    from store.state import nullable

    events = events_df(spark, EVENTS_A + EVENTS_B)
    theirs = daily_activity(events).toArrow()
    ours = daily_in_memory(events.toArrow().to_pandas())
    assert ours.schema == nullable(theirs.schema.remove_metadata())
    assert ours.num_rows == theirs.num_rows == 5

    def ordered(t) -> pd.DataFrame:
        return t.to_pandas().sort_values(list(DAILY_KEY), ignore_index=True)

    pd.testing.assert_frame_equal(ordered(ours), ordered(theirs))


def test_lifetime_in_memory_equals_lifetime_aggregates(spark):
    """The stream's pandas evaluation against the Spark one, column for column, null for null
    (u-2 and u-3 never purchase nor start a session)."""
    from store.state import frame  # the stream's state frames: key in the index

    daily = daily_activity(events_df(spark, EVENTS_A + EVENTS_B))
    ours = lifetime_in_memory(frame(daily.toArrow(), DAILY_KEY)).sort_index()
    theirs = frame(lifetime_aggregates(daily).toArrow(), LIFETIME_KEY).sort_index()
    assert len(theirs) == 3 and theirs["last_purchase_date"].isna().sum() == 2
    pd.testing.assert_frame_equal(ours, theirs)


def test_merge_lifetime_over_disjoint_days_equals_lifetime_of_all_days(spark):
    daily = daily_activity(events_df(spark, EVENTS_A + EVENTS_B))
    early = daily.where("activity_date < DATE'2024-03-02'")
    late = daily.where("activity_date >= DATE'2024-03-02'")
    merged = merge_lifetime(lifetime_aggregates(early), lifetime_aggregates(late))
    assertDataFrameEqual(merged, lifetime_aggregates(daily))
