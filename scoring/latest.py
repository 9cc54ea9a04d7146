"""A user's latest score: one definition for the sink, the monitor, the demo and the notebooks.

A user's latest record in ``churn_scores`` is the one with the greatest
``(features_version, scored_at, model_version)``: the newest feature vector first (a batch
job run late on an old table version does not win over the stream), then the newest
scoring of it, then the newest model. ``scored_at`` is the feature commit's time, so a
replayed batch ties with its first run. The record may be a score or a ``lapsed`` record
(scoring.score); :func:`current` keeps the users whose latest record is a score.

:class:`LatestScores` is the same rule kept as keyed state on the driver: read from the
table once when a scorer starts, then updated with each write, so the ``changed`` emission
policy and the lapse rule look users up instead of scanning the history per micro-batch
(docs/decisions.md, decision 67).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from scoring.inputs import to_frame
from scoring.score import SCORED

ORDER: tuple[str, ...] = ("features_version", "scored_at", "model_version")
# What the keyed state keeps per user (the order columns, then what the policies compare).
STATE_COLUMNS: tuple[str, ...] = (*ORDER, "score", "risk_band", "status")


def with_status(scores: DataFrame) -> DataFrame:
    """``scores`` with a ``status`` column: tables written before it existed hold scores only."""
    if "status" in scores.columns:
        return scores.withColumn("status", F.coalesce(F.col("status"), F.lit(SCORED)))
    return scores.withColumn("status", F.lit(SCORED))


def latest(scores: DataFrame) -> DataFrame:
    """Each user's latest record in ``scores`` (a churn_scores DataFrame), every column kept."""
    scores = with_status(scores)
    others = [c for c in scores.columns if c != "user_id"]
    order = F.struct(*[F.col(c) for c in ORDER])
    return (
        scores.groupBy(F.col("user_id"))
        .agg(F.max_by(F.struct(*[F.col(c) for c in others]), order).alias("_r"))
        .select(F.col("user_id"), *[F.col(f"_r.{c}").alias(c) for c in others])
    )


def current(scores: DataFrame) -> DataFrame:
    """The users whose latest record is a score (not ``lapsed``): the live scores."""
    return latest(scores).where(F.col("status") == SCORED)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "features_version": pd.Series(dtype="int64"),
            "scored_at": pd.Series(dtype="datetime64[ns]"),
            "model_version": pd.Series(dtype="int64"),
            "score": pd.Series(dtype="float64"),
            "risk_band": pd.Series(dtype=object),
            "status": pd.Series(dtype=object),
        },
        index=pd.Index([], name="user_id", dtype=object),
    )


@dataclass
class LatestScores:
    """Each user's latest record (STATE_COLUMNS, indexed by user_id), kept on the driver."""

    rows: pd.DataFrame = field(default_factory=_empty)

    @classmethod
    def of(cls, scores: DataFrame | None) -> LatestScores:
        """The state of a churn_scores table (None: no table yet): one aggregation."""
        if scores is None:
            return cls()
        frame = latest(scores).select(F.col("user_id"), *[F.col(c) for c in STATE_COLUMNS])
        rows = to_frame(frame).set_index("user_id")
        return cls(rows) if len(rows) else cls()

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, users: pd.Series) -> pd.DataFrame:
        """The latest record of each of ``users`` that has one: user_id, score, risk_band,
        status."""
        found = self.rows[self.rows.index.isin(users)]
        return found[["score", "risk_band", "status"]].reset_index()

    def scored(self, users: pd.Series) -> pd.Series:
        """True for each of ``users`` whose latest record is a score (in ``users``' order)."""
        status = self.rows["status"].reindex(pd.Index(users))
        return pd.Series((status == SCORED).to_numpy(), index=users.index)

    def update(self, written: pd.DataFrame) -> None:
        """Take in records just written (score_frame / lapse_frame rows): a user's record
        replaces the kept one unless the kept one is later by ORDER."""
        if written.empty:
            return
        new = written[["user_id", *STATE_COLUMNS]].set_index("user_id").astype(self.rows.dtypes)
        kept = self.rows[self.rows.index.isin(new.index)]
        both = pd.concat([kept, new]) if len(kept) else new
        newest = both.sort_values(list(ORDER), kind="stable").groupby(level=0).tail(1)
        others = self.rows.drop(newest.index, errors="ignore")
        self.rows = pd.concat([others, newest]) if len(others) else newest
