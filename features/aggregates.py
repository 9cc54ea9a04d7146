"""Additive aggregates: per-user daily activity (the silver table) and per-user lifetime totals.

Every aggregate column merges by one of add / min / max, so a micro-batch's partial
aggregates can be appended beside the stored ones and a late event is just one more partial
count. The *_ADD/_MIN/_MAX_COLUMNS lists drive that algebra everywhere it runs: here as
DataFrame code (collapse_daily reads the stored partials as one row per user and day; the
merge_* functions state the algebra, and the tests check it with them) and in the stream's in-memory state
(store/state.py).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
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


def daily_in_memory(events: pd.DataFrame) -> pa.Table:
    """daily_activity(events).toArrow() without Spark, on a pandas frame of valid events
    (user_id, event_type, event_time in UTC, amount, quantity; other columns ignored). The
    stream runs it on the batch rows its driver already holds (docs/decisions.md, decision
    38); a test holds it equal to daily_activity."""
    kind = events["event_type"].to_numpy()
    amount = events["amount"].fillna(0.0).to_numpy()
    purchase = kind == "purchase"
    times = events["event_time"]
    micros = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    rows = pd.DataFrame(
        {
            "user_id": events["user_id"].to_numpy(),
            "activity_date": micros.astype("datetime64[D]").astype("int32"),  # days since 1970
            **{f"n_{t}": (kind == t).astype("int64") for t in EVENT_TYPES},
            "n_events": np.ones(len(events), dtype="int64"),
            "amount_purchase": np.where(purchase, amount, 0.0),
            "amount_refund": np.where(kind == "refund", amount, 0.0),
            "n_items_purchased": np.where(purchase, events["quantity"].fillna(1), 0).astype(
                "int64"
            ),
            "first_event_time": micros,
            "last_event_time": micros,
        }
    )
    by_day = rows.groupby(list(DAILY_KEY), sort=False)
    daily = pd.concat(
        [
            by_day[list(DAILY_ADD_COLUMNS)].sum(),
            by_day[list(DAILY_MIN_COLUMNS)].min(),
            by_day[list(DAILY_MAX_COLUMNS)].max(),
        ],
        axis=1,
    ).reset_index()
    utc = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "user_id": pa.array(daily["user_id"], pa.string()),
            "activity_date": pa.array(daily["activity_date"], pa.int32()).cast(pa.date32()),
            **{c: pa.array(daily[c]) for c in DAILY_ADD_COLUMNS},
            **{c: pa.array(daily[c]).cast(utc) for c in (*DAILY_MIN_COLUMNS, *DAILY_MAX_COLUMNS)},
        }
    )


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


def lifetime_in_memory(daily: pd.DataFrame) -> pd.DataFrame:
    """lifetime_aggregates on a pandas frame: daily rows indexed by (user_id, activity_date),
    dates as datetime64; one row per user_id (the index), LIFETIME_COLUMNS. The stream runs
    it on each batch's partials, where a Spark job costs far more than the data
    (docs/decisions.md, decision 38); a test holds it equal to lifetime_aggregates."""
    day = daily.index.get_level_values("activity_date")
    rows = daily.assign(
        first_active_date=day,
        last_active_date=day,
        last_purchase_date=day.where(daily["n_purchase"].to_numpy() > 0),
        last_session_date=day.where(daily["n_session_start"].to_numpy() > 0),
        n_active_days=1,
    )
    by_user = rows.groupby(level="user_id", sort=False)
    parts = [
        by_user[list(LIFETIME_ADD_COLUMNS)].sum(),
        by_user[list(LIFETIME_MIN_COLUMNS)].min(),
        by_user[list(LIFETIME_MAX_COLUMNS)].max(),
    ]
    return pd.concat(parts, axis=1)[[c for c in LIFETIME_COLUMNS if c not in LIFETIME_KEY]]


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
