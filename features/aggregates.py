"""Additive aggregates: per-user daily activity (the silver table) and per-user lifetime totals.

Every aggregate column merges by one of add / min / max, so a micro-batch's partial
aggregates can be appended beside the stored ones and a late event is just one more partial
count. The *_ADD/_MIN/_MAX_COLUMNS lists drive that algebra everywhere it runs: here as
DataFrame code (collapse_daily reads the stored partials as one row per user and day; the
merge_* functions are used by tests and backfills) and in the stream's in-memory state
(store/state.py).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features.events import EVENT_TYPES, utc_date

DAILY_KEY: tuple[str, ...] = ("user_id", "activity_date")
DAILY_ADD_COLUMNS: tuple[str, ...] = (
    *[f"n_{t}" for t in EVENT_TYPES],
    "n_events",
    "amount_purchase",
    "amount_refund",
    "n_items_purchased",
)
DAILY_MIN_COLUMNS: tuple[str, ...] = ("first_event_time",)
DAILY_MAX_COLUMNS: tuple[str, ...] = ("last_event_time",)
DAILY_COLUMNS: tuple[str, ...] = (
    *DAILY_KEY,
    *DAILY_ADD_COLUMNS,
    *DAILY_MIN_COLUMNS,
    *DAILY_MAX_COLUMNS,
)

LIFETIME_KEY: tuple[str, ...] = ("user_id",)
LIFETIME_ADD_COLUMNS: tuple[str, ...] = ("n_active_days", *DAILY_ADD_COLUMNS)
LIFETIME_MIN_COLUMNS: tuple[str, ...] = ("first_active_date", "first_event_time")
LIFETIME_MAX_COLUMNS: tuple[str, ...] = (
    "last_active_date",
    "last_purchase_date",
    "last_session_date",
    "last_event_time",
)
LIFETIME_COLUMNS: tuple[str, ...] = (
    *LIFETIME_KEY,
    "first_active_date",
    "last_active_date",
    "last_purchase_date",
    "last_session_date",
    *LIFETIME_ADD_COLUMNS,
    "first_event_time",
    "last_event_time",
)


def _is(event_type: str) -> Column:
    return F.col("event_type") == F.lit(event_type)


def daily_activity(events: DataFrame) -> DataFrame:
    """Per-user, per-UTC-day additive counts and sums; safe on a micro-batch or the history.

    Input: valid events (user_id, event_type, event_time, amount, quantity). A purchase
    without a quantity counts as one item; a missing amount counts as 0.
    """
    c = _daily_columns(events.sparkSession.sparkContext.applicationId)
    return events.groupBy(*c[0]).agg(*c[1]).select(*c[2])


@functools.lru_cache(maxsize=4)
def _daily_columns(_app_id: str) -> tuple[list[Column], list[Column], list[Column]]:
    """daily_activity's (keys, aggregates, output), built once per Spark application: each
    Column costs Py4J round trips, and the same unresolved ones serve every batch
    (docs/decisions.md, decision 28)."""
    amount = F.coalesce(F.col("amount"), F.lit(0.0))
    keys = [F.col("user_id"), utc_date(F.col("event_time")).alias("activity_date")]
    aggregates = [
        *[F.count(F.when(_is(t), F.lit(1))).alias(f"n_{t}") for t in EVENT_TYPES],
        F.count(F.lit(1)).alias("n_events"),
        F.sum(F.when(_is("purchase"), amount).otherwise(F.lit(0.0))).alias("amount_purchase"),
        F.sum(F.when(_is("refund"), amount).otherwise(F.lit(0.0))).alias("amount_refund"),
        F.sum(F.when(_is("purchase"), F.coalesce(F.col("quantity"), F.lit(1))).otherwise(F.lit(0)))
        .cast("long")
        .alias("n_items_purchased"),
        F.min(F.col("event_time")).alias("first_event_time"),
        F.max(F.col("event_time")).alias("last_event_time"),
    ]
    return keys, aggregates, [F.col(c) for c in DAILY_COLUMNS]


def _combine(
    partials: DataFrame,
    key: Sequence[str],
    add: Sequence[str],
    low: Sequence[str],
    high: Sequence[str],
    columns: Sequence[str],
) -> DataFrame:
    """Combine rows of partial aggregates with the same key by add / min / max."""
    return (
        partials.groupBy(*[F.col(k) for k in key])
        .agg(
            *[F.sum(F.col(c)).alias(c) for c in add],
            *[F.min(F.col(c)).alias(c) for c in low],
            *[F.max(F.col(c)).alias(c) for c in high],
        )
        .select(*[F.col(c) for c in columns])
    )


def collapse_daily(partials: DataFrame) -> DataFrame:
    """One row per (user, day) from any number of daily partials of it (the stored table is a
    log of per-batch partials; this is how it reads as the daily table)."""
    return _combine(
        partials, DAILY_KEY, DAILY_ADD_COLUMNS, DAILY_MIN_COLUMNS, DAILY_MAX_COLUMNS, DAILY_COLUMNS
    )


def merge_daily(a: DataFrame, b: DataFrame) -> DataFrame:
    """Combine two daily_activity results: merge_daily(daily(x), daily(y)) == daily(x + y)."""
    return collapse_daily(a.select(*DAILY_COLUMNS).unionByName(b.select(*DAILY_COLUMNS)))


def lifetime_aggregates(daily: DataFrame, by: Sequence[str] = ()) -> DataFrame:
    """Per-user lifetime totals and first/last dates from daily_activity rows (per user and
    ``by`` when given: LIFETIME_COLUMNS, then the ``by`` columns).

    n_active_days counts daily rows, so it adds across merges only if each (user, day) is
    passed once: when a batch only adds counts to a day already stored, the job must not
    count that day again (pass n_active_days = 0 for it, or rebuild from the daily table).
    Every other column merges safely however the days are split.
    """
    aggregates, output = _lifetime_columns(daily.sparkSession.sparkContext.applicationId)
    extra = [F.col(c) for c in by]
    return daily.groupBy(F.col("user_id"), *extra).agg(*aggregates).select(*output, *extra)


@functools.lru_cache(maxsize=4)
def _lifetime_columns(_app_id: str) -> tuple[list[Column], list[Column]]:
    """lifetime_aggregates' (aggregates, output), built once per Spark application."""
    day = F.col("activity_date")
    aggregates = [
        F.min(day).alias("first_active_date"),
        F.max(day).alias("last_active_date"),
        F.max(F.when(F.col("n_purchase") > 0, day)).alias("last_purchase_date"),
        F.max(F.when(F.col("n_session_start") > 0, day)).alias("last_session_date"),
        F.count(F.lit(1)).alias("n_active_days"),
        *[F.sum(F.col(c)).alias(c) for c in DAILY_ADD_COLUMNS],
        F.min(F.col("first_event_time")).alias("first_event_time"),
        F.max(F.col("last_event_time")).alias("last_event_time"),
    ]
    return aggregates, [F.col(c) for c in LIFETIME_COLUMNS]


def running_lifetime(partials: DataFrame, order: str) -> DataFrame:
    """Each row's lifetime totals merged with those of the same user's earlier rows by
    ``order``: lifetime_aggregates per period in, lifetime up to each period out. Rows whose
    aggregates are null (keys asked for, no activity of their own) take the earlier rows'.
    One pass over the partials sorted per user (Spark's running frames are incremental)."""
    before = (
        Window.partitionBy(F.col("user_id"))
        .orderBy(F.col(order))
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    merged = {
        **{c: F.sum(F.col(c)).over(before) for c in LIFETIME_ADD_COLUMNS},
        **{c: F.min(F.col(c)).over(before) for c in LIFETIME_MIN_COLUMNS},
        **{c: F.max(F.col(c)).over(before) for c in LIFETIME_MAX_COLUMNS},
    }
    return partials.select(
        *[merged[c].alias(c) if c in merged else F.col(c) for c in partials.columns]
    )


def merge_lifetime(a: DataFrame, b: DataFrame) -> DataFrame:
    """Combine two lifetime_aggregates results (built from disjoint sets of (user, day) rows)."""
    return _combine(
        a.unionByName(b),
        LIFETIME_KEY,
        LIFETIME_ADD_COLUMNS,
        LIFETIME_MIN_COLUMNS,
        LIFETIME_MAX_COLUMNS,
        LIFETIME_COLUMNS,
    )
