"""Point-in-time training rows: spine x labels x features as of each cutoff.

Features come from the same functions the stream uses (features.compute), fed the daily
table and the cutoff, so a training row is exactly what the scorer would have seen at
00:00 UTC on the cutoff day, and nothing after it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.aggregates import (
    LIFETIME_COLUMNS,
    collapse_daily,
    lifetime_aggregates,
    running_lifetime,
)
from features.compute import AS_OF, LOOKBACK_DAYS, features_as_of
from features.registry import FEATURE_NAMES
from training.spine import LABEL, SPINE_KEY, days_before, label, spine

TRAINING_COLUMNS: tuple[str, ...] = (*SPINE_KEY, LABEL, *FEATURE_NAMES)


def daily_columns(table: DataFrame) -> DataFrame:
    """The stored daily partials as one row per (user, day) of DAILY_COLUMNS (the stream
    appends one partial per batch; bookkeeping columns such as batch_id are dropped)."""
    return collapse_daily(table)


def lifetime_at(daily: DataFrame, keys: DataFrame, cutoffs: Sequence[date]) -> DataFrame:
    """Lifetime aggregates of each (user_id, AS_OF) key from that user's days before AS_OF.

    lifetime_aggregates per period between consecutive cutoffs, then each period merged with
    the earlier ones by the add / min / max algebra (features.aggregates.running_lifetime):
    one pass over the history whatever the number of cutoffs. Equal to
    ``lifetime_as_of(daily, cutoff)`` for every key (tests/training/test_dataset.py)."""
    days = sorted(set(cutoffs))
    # Each day belongs to the period of the first cutoff after it.
    span = (days[0] + timedelta(days=n) for n in range((days[-1] - days[0]).days))
    periods = [(d, days[bisect_right(days, d)]) for d in span]
    period_of = F.broadcast(
        daily.sparkSession.createDataFrame(periods, f"activity_date date, {AS_OF} date")
    )
    day = F.col("activity_date")
    history = daily.where(day < F.lit(days[-1])).join(period_of, on="activity_date", how="left")
    history = history.withColumn(AS_OF, F.coalesce(F.col(AS_OF), F.lit(days[0])))
    partials = lifetime_aggregates(history, by=(AS_OF,))
    asked = keys.select(F.col("user_id"), F.col(AS_OF), F.lit(True).alias("_asked"))
    merged = running_lifetime(partials.join(asked, on=["user_id", AS_OF], how="full"), AS_OF)
    return merged.where(F.col("_asked")).select(*[F.col(c) for c in LIFETIME_COLUMNS], F.col(AS_OF))


def features_at(daily: DataFrame, keys: DataFrame, cutoffs: Sequence[date]) -> DataFrame:
    """(user_id, cutoff, FEATURE_NAMES as double) for each (user_id, cutoff) key, from the
    days strictly before its cutoff: features.compute's expressions, every cutoff at once."""
    asked = keys.select(F.col("user_id"), F.col("cutoff").alias(AS_OF))
    recent = daily.join(
        days_before(daily.sparkSession, cutoffs, LOOKBACK_DAYS, AS_OF), on="activity_date"
    )
    feats = features_as_of(recent, lifetime_at(daily, asked, cutoffs))
    return feats.select(
        F.col("user_id"),
        F.col("as_of").alias("cutoff"),
        *[F.col(name).cast("double").alias(name) for name in FEATURE_NAMES],
    )


def training_set(
    daily: DataFrame, cutoffs: Sequence[date], *, lookback_days: int, horizon_days: int
) -> DataFrame:
    """One row per eligible (user_id, cutoff): the label and the features as of the cutoff.

    Columns: TRAINING_COLUMNS (features as double, nulls kept for LightGBM). The caller
    passes only labelled cutoffs (spine.is_labelled); this function cannot see data_end.
    One Spark plan for every cutoff, linear in the rows and in the cutoffs.
    """
    days = sorted(set(cutoffs))
    if not days:
        raise ValueError("no cutoffs")
    # Nothing at or after the last label window's end is read (lifetime needs all before).
    scoped = daily.where(F.col("activity_date") < F.lit(days[-1] + timedelta(days=horizon_days)))
    keys = spine(scoped, days, lookback_days)
    labels = label(scoped, keys, horizon_days)
    return labels.join(features_at(scoped, keys, days), on=list(SPINE_KEY), how="inner").select(
        *[F.col(c) for c in TRAINING_COLUMNS]
    )
