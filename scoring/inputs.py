"""What gets scored: feature vectors from ``user_features``, as score_frame's input columns.

Two readers of the same table, one output shape (scoring.score.INPUT_COLUMNS, features as
double so that both paths hand LightGBM identical float64 values):

- :func:`latest_changes`: a micro-batch of the table's Change Data Feed -> the newest
  vector per user in the batch (the stream);
- :func:`snapshot`: the table at one version -> every user's vector (the batch job).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features.registry import FEATURE_NAMES

# Change types that carry a user's new vector (deletes and pre-images carry none).
NEW_VECTOR_CHANGES: tuple[str, ...] = ("insert", "update_postimage")


def _features(names: Sequence[str]) -> list[Column]:
    return [F.col(n).cast("double").alias(n) for n in names]


def latest_changes(changes: DataFrame, names: Sequence[str] = FEATURE_NAMES) -> DataFrame:
    """The newest vector per user in a CDF batch, with the commit that wrote it.

    A batch may span several commits (a restart, a slow trigger, the first batch from
    version 0); only each user's newest one is scored. ``changes`` counts the user's
    new-vector rows in the batch.
    """
    by_user = Window.partitionBy(F.col("user_id"))
    newest_first = by_user.orderBy(F.col("_commit_version").desc())
    return (
        changes.where(F.col("_change_type").isin(*NEW_VECTOR_CHANGES))
        .select(
            F.col("*"),
            F.row_number().over(newest_first).alias("_rank"),
            F.count(F.lit(1)).over(by_user).alias("changes"),
        )
        .where(F.col("_rank") == 1)
        .select(
            F.col("user_id"),
            F.col("as_of"),
            F.col("_commit_version").alias("features_version"),
            F.col("_commit_timestamp").alias("features_committed_at"),
            *_features(names),
            F.col("changes"),
        )
    )


def snapshot(
    features: DataFrame,
    version: int,
    committed_at: datetime,
    names: Sequence[str] = FEATURE_NAMES,
) -> DataFrame:
    """Every user's vector in ``user_features`` read at ``version`` (committed at ``committed_at``)."""
    return features.select(
        F.col("user_id"),
        F.col("as_of"),
        F.lit(version).cast("long").alias("features_version"),
        F.lit(committed_at).cast("timestamp").alias("features_committed_at"),
        *_features(names),
        F.lit(1).cast("long").alias("changes"),
    )
