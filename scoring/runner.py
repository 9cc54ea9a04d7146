"""One scoring pass, as the stream runs it per micro-batch and the batch job once.

Both drivers collect their input vectors to the driver (a micro-batch holds at most one
row per user), score them with scoring.score.score_frame, and write the result through a
ScoreSink under one idempotency key:

- the stream: (writer = the query's app id, batch_id), emission policy applied;
- the batch job: (writer = score_batch-<model>-v<version>, the user_features version),
  every user written.
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
from scoring.model import ModelCache
from scoring.score import BANDS, ScoringModel, ScoringRules, emitted, score_frame
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
            f"scored ({bands}; {self.explained:,} with reasons), {self.emitted:,} emitted; "
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
    r: PassResult,
    t: float,
) -> pd.DataFrame:
    r.rows_in = int(pdf["changes"].sum()) if len(pdf) else 0
    scored = score_frame(model, pdf, rules)
    r.scored = len(scored)
    r.by_band = {b: int(n) for b, n in scored["risk_band"].value_counts().items()}
    r.explained = int(scored["reasons"].notna().sum())
    r.model = model.label
    t = r.step("score", t)
    if emission.policy != "every" and len(scored):
        users = spark.createDataFrame(scored[["user_id"]], "user_id string")
        previous = sink.previous(spark, users, before=(txn.app_id, txn.version))
        keep = emitted(scored, previous, policy=emission.policy, min_delta=emission.min_delta)
        scored = scored[keep.to_numpy()]
        t = r.step("compare", t)
    r.emitted = len(scored)
    if len(scored):
        # Rows built on the driver: written without file statistics (decision 41).
        sink.write(to_spark(small_writes(spark), scored, txn.app_id, txn.version), txn)
        r.step("write", t)
    return scored


def process_batch(
    spark: SparkSession,
    changes: DataFrame,
    batch_id: int,
    *,
    cache: ModelCache,
    rules: ScoringRules,
    emission: Emission,
    sink: ScoreSink,
    writer: str,
    may_be_replay: bool = True,
) -> PassResult:
    """Score one micro-batch of user_features' change feed and write it, once per batch_id.

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
    """Score every user in ``user_features`` (at ``version``, default the current one) with
    ``model``; write once per (model version, table version). Returns the result and rows."""
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
    t = r.step("read", t)
    scored = _score_and_write(
        spark,
        inputs,
        model,
        rules,
        sink,
        Txn(writer, version),
        Emission("every"),
        r,
        t,
    )
    r.seconds = time.monotonic() - t0
    return r, scored
