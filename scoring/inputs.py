"""What gets scored: feature vectors from ``user_features``, as score_frame's input columns.

Two readers of the same table, one output shape (scoring.score.INPUT_COLUMNS, features as
double so that both paths hand LightGBM identical float64 values):

- :func:`latest_changes`: a micro-batch of the table's Change Data Feed -> the newest
  vector per user in the batch, on the driver (the stream);
- :func:`snapshot`: the table at one version -> every user's vector (the batch job).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.registry import FEATURE_NAMES

# Change types that carry a user's new vector (deletes and pre-images carry none).
NEW_VECTOR_CHANGES: tuple[str, ...] = ("insert", "update_postimage")


def _features(names: Sequence[str]) -> list[Column]:
    return [F.col(n).cast("double").alias(n) for n in names]


def latest_changes(changes: DataFrame, names: Sequence[str] = FEATURE_NAMES) -> pd.DataFrame:
    """The newest vector per user in a CDF batch, with the commit that wrote it.

    A batch may span several commits (a restart, a slow trigger, the first batch from
    version 0); only each user's newest one is scored. ``changes`` counts the user's
    new-vector rows in the batch. The rows come to the driver as they are (a micro-batch
    is small) and are filtered, typed and reduced there: a Window in Spark would shuffle
    them first (docs/decisions.md, decision 32), and a projection casting 85 features,
    built anew for each micro-batch's DataFrame, cost 0.4-0.8 s of planning (decision 42).
    """
    batch = to_frame(changes)
    rows = batch[batch["_change_type"].isin(NEW_VECTOR_CHANGES)]
    rows = pd.DataFrame(
        {
            "user_id": rows["user_id"],
            "as_of": rows["as_of"],
            "features_version": rows["_commit_version"].astype("int64"),
            "features_committed_at": rows["_commit_timestamp"],
            # float64, as Spark's cast gives snapshot(): nulls become NaN either way.
            **{n: rows[n].astype("float64") for n in names},
        }
    )
    counts = rows.groupby("user_id", sort=False)["user_id"].transform("size")
    newest = rows.assign(changes=counts.astype("int64")).sort_values(
        "features_version", kind="stable"
    )
    return newest.drop_duplicates("user_id", keep="last").reset_index(drop=True)


def to_frame(df: DataFrame) -> pd.DataFrame:
    """A DataFrame on the driver through Arrow, timestamps as naive UTC (what ``toPandas``
    gives under this project's UTC session, a row at a time)."""
    frame = df.toArrow().to_pandas()
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            frame[name] = frame[name].dt.tz_convert("UTC").dt.tz_localize(None)
    return frame


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
