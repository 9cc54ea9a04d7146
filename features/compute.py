"""As-of feature computation: one feature vector per user from the daily and lifetime tables.

Point-in-time correctness: features as of a date use only data strictly before it. The daily
table is filtered here; the lifetime table must already be built from days before as_of
(lifetime_as_of does that for backfills and training sets).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.aggregates import lifetime_aggregates
from features.registry import ACTIVE_DAY, FEATURES, Inputs, WindowSum

OUTPUT_KEY: tuple[str, ...] = ("user_id", "as_of")
AS_OF = "_as_of"  # the as_of date as a column, so that one set of expressions serves every date


def _window_sums() -> tuple[WindowSum, ...]:
    """Every window sum the registry reads, once each, in registry order."""
    return tuple(dict.fromkeys(ws for f in FEATURES for ws in f.window_sums))


# The longest window any feature reads (a 30-day trend reads 60 days, a 90-day window 90).
LOOKBACK_DAYS = max(ws.lookback_days for ws in _window_sums())


_ARROW_TYPES = {"bigint": pa.int64(), "int": pa.int32(), "double": pa.float64()}
# compute_features' output as Arrow: what features_in_memory returns.
FEATURES_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("as_of", pa.date32()),
        *[pa.field(f.name, _ARROW_TYPES[f.dtype]) for f in FEATURES],
    ]
)


def daily_before(daily: DataFrame, as_of: date) -> DataFrame:
    """Daily rows strictly before as_of: the only daily data a feature as of as_of may see."""
    return daily.where(F.col("activity_date") < F.lit(as_of))


def lifetime_as_of(daily: DataFrame, as_of: date) -> DataFrame:
    """Lifetime aggregates from the daily rows strictly before as_of."""
    return lifetime_aggregates(daily_before(daily, as_of))


def compute_features(daily: DataFrame, lifetime: DataFrame, as_of: date) -> DataFrame:
    """Feature vector as of `as_of` for every user in `lifetime`: user_id, as_of, FEATURE_NAMES.

    Window Nd covers daily rows with activity_date in [as_of - N, as_of). Users without rows
    in a window get 0 for its counts and sums. `daily` must hold one row per (user, day), as
    `collapse_daily` of the stored partials does. `lifetime` must come from days before
    as_of; this function cannot check that, and rows from as_of or later would leak into
    recency and lifetime features.
    """
    if isinstance(as_of, datetime):
        raise TypeError("as_of is a date: features as of a day use the days before it")
    on = F.lit(as_of).alias(AS_OF)
    return features_as_of(daily.select(F.col("*"), on), lifetime.select(F.col("*"), on))


def features_as_of(daily: DataFrame, lifetime: DataFrame) -> DataFrame:
    """compute_features for many dates at once: both inputs carry the date in column AS_OF.

    One vector per row of `lifetime` (a user's totals from the days before its AS_OF); the
    window sums read the `daily` rows of the same user and AS_OF. A daily row may appear
    under several dates (training sets build one copy per cutoff whose windows hold it).
    """
    c = _columns(daily.sparkSession.sparkContext.applicationId, tuple(lifetime.columns))
    key = [F.col("user_id"), F.col(AS_OF)]
    recent = daily.where(c.recent).select(F.col("*"), c.active_day)
    windowed = recent.groupBy(*key).agg(*c.sums)
    # A user with no daily rows in the lookback has no `windowed` row: their sums are 0.
    filled = lifetime.join(windowed, on=["user_id", AS_OF], how="left")
    return filled.select(*c.filled).select(*c.output)


@dataclass(frozen=True)
class _Columns:
    recent: Column
    active_day: Column
    sums: list[Column]
    filled: list[Column]
    output: list[Column]


@functools.lru_cache(maxsize=8)
def _columns(app_id: str, lifetime_columns: tuple[str, ...]) -> _Columns:
    """compute_features' expressions, built once per Spark application.

    Building them costs about 12,000 Py4J calls (1.1 s a batch in the stream, where they
    were the feature step's largest part); Columns are unresolved expressions, so the same
    ones serve every DataFrame of the application (docs/decisions.md, decision 28). They
    read as_of from the column ``AS_OF``, so one set serves every as_of too (decision 33).
    """
    sums = _window_sums()
    lookback = max(ws.lookback_days for ws in sums)
    day, as_of = F.col("activity_date"), F.col(AS_OF)

    def days_before(n: int) -> Column:
        return F.date_sub(as_of, n) if n else as_of

    def in_window(ws: WindowSum) -> Column:
        return (day >= days_before(ws.offset_days + ws.days)) & (day < days_before(ws.offset_days))

    return _Columns(
        recent=(day < as_of) & (day >= days_before(lookback)),
        active_day=(F.col("n_events") > 0).cast("long").alias(ACTIVE_DAY),
        sums=[
            F.sum(F.when(in_window(ws), F.col(ws.column)).otherwise(F.lit(0))).alias(ws.alias)
            for ws in sums
        ],
        filled=[
            *[F.col(c) for c in lifetime_columns],
            *[F.coalesce(F.col(ws.alias), F.lit(0)).alias(ws.alias) for ws in sums],
        ],
        output=[
            F.col("user_id"),
            as_of.alias("as_of"),
            *[feature.column(as_of) for feature in FEATURES],
        ],
    )


def features_in_memory(daily: pd.DataFrame, lifetime: pd.DataFrame, as_of: date) -> pa.Table:
    """compute_features without Spark, on pandas frames: the feature stream's hot state.

    ``daily`` holds one row per (user_id, activity_date) (its index), ``lifetime`` one row
    per user_id (its index), dates as datetime64, under the same rules as compute_features:
    window Nd covers the days in [as_of - N, as_of), a user without rows in it gets 0, and
    ``lifetime`` must come from days before as_of. The formulas are the registry's, evaluated
    on numpy arrays (docs/decisions.md, decision 38): about 10 ms for 3,000 users, where a
    Spark job costs 0.7-2 s to plan and run. One row per row of ``lifetime``.
    """
    if isinstance(as_of, datetime):
        raise TypeError("as_of is a date: features as of a day use the days before it")
    day = np.datetime64(as_of, "D")
    users = lifetime.index
    if len(daily):
        codes = users.get_indexer(daily.index.get_level_values("user_id"))
        dates = daily.index.get_level_values("activity_date").to_numpy(dtype="datetime64[D]")
        age = (day - dates) // np.timedelta64(1, "D")
        known = codes >= 0
        columns = {c: daily[c].to_numpy() for c in daily.columns}
        columns[ACTIVE_DAY] = (columns["n_events"] > 0).astype(np.int64)
    sums: dict[str, np.ndarray] = {}
    for ws in _window_sums():
        if not len(daily):
            sums[ws.alias] = np.zeros(len(users), dtype=np.int64)
            continue
        rows = known & (age > ws.offset_days) & (age <= ws.offset_days + ws.days)
        values = columns[ws.column]
        total = np.bincount(codes[rows], weights=values[rows], minlength=len(users))
        sums[ws.alias] = total.astype(values.dtype)
    inputs = Inputs(sums, lifetime, day)
    arrays = [
        pa.array(users.to_numpy(dtype=object), pa.string()),
        pa.array(np.full(len(users), day), pa.date32()),
    ]
    for feature in FEATURES:
        values, valid = feature.formula.values(inputs)
        kind = _ARROW_TYPES[feature.dtype]
        arrays.append(pa.array(values.astype(kind.to_pandas_dtype()), kind, mask=~valid))
    return pa.Table.from_arrays(arrays, schema=FEATURES_SCHEMA)
