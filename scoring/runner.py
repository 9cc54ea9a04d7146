"""One scoring pass, as the stream runs it per micro-batch and the batch job once.

Both drivers collect their input vectors to the driver (a micro-batch holds at most one
row per user), score them with scoring.score.score_frame, and write the result through a
ScoreSink under one idempotency key:

- the stream: (writer = the query's app id, batch_id), emission policy applied;
- the batch job: (writer = score_batch-<model>-v<version>, the user_features version),
  every score written.

Both score only the model's population and write one ``lapsed`` record for a user who
leaves it (scoring.score.in_population, docs/decisions.md, decision 67).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from infra.timing import StepTimes
from scoring.inputs import latest_changes, snapshot, to_frame
from scoring.latest import LatestScores
from scoring.model import ModelCache
from scoring.score import (
    BANDS,
    ScoringModel,
    ScoringRules,
    emitted,
    in_population,
    lapse_frame,
    score_frame,
)
from scoring.sink import ScoreSink, to_spark
from store.tables import Txn, latest_per_user, small_writes

EmitPolicy = Literal["every", "changed"]


@dataclass(frozen=True)
class Emission:
    """``every`` update, or only ``changed`` scores (moved >= min_delta, or a new band)."""

    policy: EmitPolicy = "every"
    min_delta: float = 0.05


@dataclass
class PassResult(StepTimes):
    """What one scoring pass did, for the progress line and the caller's checks."""

    batch_id: int
    rows_in: int = 0
    scored: int = 0
    lapsed: int = 0
    outside: int = 0
    emitted: int = 0
    by_band: dict[str, int] = field(default_factory=dict)
    explained: int = 0
    model: str = ""
    skipped: bool = False
    seconds: float = 0.0

    def line(self) -> str:
        if self.skipped:
            return f"batch {self.batch_id}: already written, skipped"
        bands = " ".join(f"{b}={self.by_band.get(b, 0)}" for b in BANDS)
        return (
            f"batch {self.batch_id}: {self.rows_in:,} feature updates -> {self.scored:,} users "
            f"scored ({bands}; {self.explained:,} with reasons), {self.lapsed:,} lapsed, "
            f"{self.outside:,} outside the population; {self.emitted:,} emitted; "
            f"model {self.model}; {self.seconds:.1f}s ({self.steps_text()})"
        )


def _score_and_write(
    spark: SparkSession,
    pdf: pd.DataFrame,
    model: ScoringModel,
    rules: ScoringRules,
    sink: ScoreSink,
    txn: Txn,
    emission: Emission,
    latest: LatestScores,
    r: PassResult,
    t: float,
) -> pd.DataFrame:
    """Score the users in the model's population, write a ``lapsed`` record for each user who
    just left it (their latest record is a score), leave the others out; then emit."""
    r.rows_in = int(pdf["changes"].sum()) if len(pdf) else 0
    live = in_population(pdf, model.lookback_days)
    scored = score_frame(model, pdf[live], rules)
    leaving = pdf[~live]
    lapsed = lapse_frame(model, leaving[latest.scored(leaving["user_id"]).to_numpy()])
    r.scored, r.lapsed, r.outside = len(scored), len(lapsed), len(leaving) - len(lapsed)
    r.by_band = {b: int(n) for b, n in scored["risk_band"].value_counts().items()}
    r.explained = int(scored["reasons"].notna().sum())
    r.model = model.label
    t = r.step("score", t)
    if emission.policy != "every" and len(scored):
        previous = latest.lookup(scored["user_id"])
        keep = emitted(scored, previous, policy=emission.policy, min_delta=emission.min_delta)
        scored = scored[keep.to_numpy()]
        t = r.step("compare", t)
    parts = [f for f in (scored, lapsed) if len(f)]
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else (parts or [scored])[0]
    r.emitted = len(out)
    if len(out):
        # Rows built on the driver: written without file statistics (decision 41).
        sink.write(to_spark(small_writes(spark), out, txn.app_id, txn.version), txn)
        latest.update(out)  # also when the sink had them already: the same rows
        r.step("write", t)
    return out


def process_batch(
    spark: SparkSession,
    changes: DataFrame,
    batch_id: int,
    *,
    cache: ModelCache,
    rules: ScoringRules,
    emission: Emission,
    sink: ScoreSink,
    latest: LatestScores,
    writer: str,
    may_be_replay: bool = True,
) -> PassResult:
    """Score one micro-batch of user_features' change feed and write it, once per batch_id.

    ``latest`` is the scores table's latest record per user (scoring.latest), loaded when
    the query started and kept up to date here.

    A batch whose rows are already in the table (the job died after the Delta commit, before
    the checkpoint) is skipped whole, so Kafka gets no second copy either. Only the first
    batch a query runs can be such a replay; for the others pass ``may_be_replay=False``
    to save the lookup (the Delta append stays idempotent either way).
    """
    t0 = t = time.monotonic()
    r = PassResult(batch_id=batch_id)
    if may_be_replay:
        if sink.already_written(spark, writer, batch_id):
            r.skipped = True
            return r
        t = r.step("check", t)
    model = cache.get()
    t = r.step("model", t)
    inputs = latest_changes(changes)
    t = r.step("read", t)
    _score_and_write(
        spark,
        inputs,
        model,
        rules,
        sink,
        Txn(writer, batch_id),
        emission,
        latest,
        r,
        t,
    )
    r.model = cache.status()
    r.seconds = time.monotonic() - t0
    return r


def table_version(spark: SparkSession, path: str) -> tuple[int, object]:
    """The Delta table's current version and its commit timestamp."""
    last = DeltaTable.forPath(spark, path).history(1).collect()[0]
    return int(last["version"]), last["timestamp"]


def batch_writer(model: ScoringModel) -> str:
    """The batch job's idempotency id: one per model version (the txn version is the table's)."""
    return f"score_batch-{model.name}-v{model.version}"


def score_table(
    spark: SparkSession,
    features_path: str,
    model: ScoringModel,
    *,
    rules: ScoringRules,
    sink: ScoreSink,
    version: int | None = None,
) -> tuple[PassResult, pd.DataFrame]:
    """Score every user in ``user_features`` (at ``version``, default the current one) that is
    in ``model``'s population, and write a ``lapsed`` record for each user who left it since
    their latest score; once per (model version, table version). Returns the result and
    the rows written."""
    t0 = t = time.monotonic()
    current, _ = table_version(spark, features_path)
    version = current if version is None else version
    history = DeltaTable.forPath(spark, features_path).history()
    committed_at = history.where(f"version = {version}").collect()[0]["timestamp"]
    features = latest_per_user(
        spark.read.format("delta").option("versionAsOf", version).load(features_path)
    )
    r = PassResult(batch_id=version)
    writer = batch_writer(model)
    if sink.already_written(spark, writer, version):
        r.skipped = True
        return r, pd.DataFrame()
    inputs = to_frame(snapshot(features, version, committed_at))
    latest = LatestScores.of(sink.read(spark) if sink.exists(spark) else None)
    t = r.step("read", t)
    scored = _score_and_write(
        spark,
        inputs,
        model,
        rules,
        sink,
        Txn(writer, version),
        Emission("every"),
        latest,
        r,
        t,
    )
    r.seconds = time.monotonic() - t0
    return r, scored
