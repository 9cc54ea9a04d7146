"""Point-in-time training rows: spine x labels x features as of each cutoff.

Features come from the same functions the stream uses (features.compute), fed the daily
table and the cutoff, so a training row is exactly what the scorer would have seen at
00:00 UTC on the cutoff day, and nothing after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.aggregates import collapse_daily
from features.compute import compute_features, lifetime_as_of
from features.registry import FEATURE_NAMES
from training.spine import LABEL, SPINE_KEY, label, spine

TRAINING_COLUMNS: tuple[str, ...] = (*SPINE_KEY, LABEL, *FEATURE_NAMES)


def daily_columns(table: DataFrame) -> DataFrame:
    """The stored daily partials as one row per (user, day) of DAILY_COLUMNS (the stream
    appends one partial per batch; bookkeeping columns such as batch_id are dropped)."""
    return collapse_daily(table)


def features_at(daily: DataFrame, cutoff: date) -> DataFrame:
    """(user_id, cutoff, FEATURE_NAMES as double) as of cutoff, from days strictly before it."""
    feats = compute_features(daily, lifetime_as_of(daily, cutoff), cutoff)
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
    """
    days = sorted(set(cutoffs))
    if not days:
        raise ValueError("no cutoffs")
    # Nothing at or after the last label window's end is read (lifetime needs all before).
    scoped = daily.where(F.col("activity_date") < F.lit(days[-1] + timedelta(days=horizon_days)))
    labels = label(scoped, spine(scoped, days, lookback_days), horizon_days)
    feats = reduce(DataFrame.unionByName, [features_at(scoped, c) for c in days])
    return labels.join(feats, on=list(SPINE_KEY), how="inner").select(
        *[F.col(c) for c in TRAINING_COLUMNS]
    )
