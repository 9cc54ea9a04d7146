"""Score every feature update with the champion model (spark-submit entry point).

Reads the Change Data Feed of ``user_features`` (from version 0 unless told), scores the newest
vector of each updated user with the model at the configured registry alias, and writes
explained scores to Kafka (``kafka.topics.scores``) and the Delta table ``churn_scores``,
idempotently per micro-batch. Only the model's population is scored: users active within
the lookback it was trained with; a user who leaves it gets one ``lapsed`` record. The
alias is re-resolved at every batch (or every ``scoring.resolve_every_s``): a new champion
is picked up without a restart, a broken one is refused and the previous model keeps
scoring. Until ``user_features`` exists and a
model is at the alias, the job waits and says so. See docs/scoring.md.

  python -m jobs.stream_scores                  # run until stopped (Ctrl-C)
  python -m jobs.stream_scores --available-now  # score every pending update, then stop
  python -m infra.submit --cores 1 stream_scores  # on a Spark cluster (make submit)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from features.registry import FEATURE_NAMES
from infra import faults
from infra.cli import add_config_arguments, run
from infra.config import Config, load_config
from infra.kafka_io import ensure_topics, spark_sink_options
from infra.metrics import ScoreMetrics, serve
from infra.mlflow_io import acting_as, fail_fast
from infra.spark import build_spark
from infra.streaming import (
    checkpoint_started,
    query_app_id,
    run_until_stopped,
    start_foreach_batch,
)
from scoring.latest import LatestScores
from scoring.model import MlflowRegistry, ModelCache
from scoring.runner import Emission, process_batch, table_version
from scoring.score import ScoringRules
from scoring.sink import ScoreSink, scores_path
from store.tables import newest_version_from, table_exists

Log = Callable[[str], None]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.stream_scores",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument(
        "--available-now",
        action="store_true",
        help="score every feature update committed so far, then stop (trigger availableNow)",
    )
    p.add_argument(
        "--starting-version",
        default="0",
        help="user_features version a NEW checkpoint starts from: a number or 'latest' "
        "(default 0: score everything); ignored when the checkpoint exists",
    )
    args = p.parse_args(argv)
    if args.starting_version != "latest" and not args.starting_version.isdigit():
        p.error("--starting-version takes a table version (0, 1, ...) or 'latest'")
    return args


def app_id(checkpoint: str) -> str:
    """The idempotency id of this query's writes: stable for as long as its checkpoint lives."""
    return query_app_id("stream_scores", checkpoint)


def rules_from(cfg: Config) -> ScoringRules:
    s = cfg.scoring
    return ScoringRules(s.band_medium, s.band_high, tuple(s.reasons_for_bands))


def model_cache(cfg: Config, log: Log = print) -> ModelCache:
    """The champion cache the stream scores with (registry = cfg.mlflow.tracking_uri)."""
    return ModelCache(
        MlflowRegistry(cfg.mlflow.tracking_uri),
        cfg.mlflow.model_name,
        cfg.scoring.model_alias,
        FEATURE_NAMES,
        resolve_every_s=cfg.scoring.resolve_every_s,
        log=log,
    )


def check_checkpoint(spark: SparkSession, sink: ScoreSink, checkpoint: str) -> None:
    """Refuse to start from a lost checkpoint: its batch ids would restart at 0 and Delta
    would silently skip every write whose (app id, batch id) it has already seen."""
    if not checkpoint_started(spark, checkpoint) and sink.has_writer(spark, app_id(checkpoint)):
        raise SystemExit(
            f"stream_scores: the checkpoint {checkpoint} is gone, but {sink.path} holds scores "
            "written through it. Restore the checkpoint, or move it and the scores aside "
            "(see docs/scoring.md, Operations) to score from the start again."
        )


def wait_for_features(spark: SparkSession, path: str, poll_s: float, log: Log) -> None:
    """Block until the user_features table exists (the feature stream creates it)."""
    while not table_exists(spark, path):
        log(f"stream_scores: waiting for the feature table {path}; checking again in {poll_s:g}s")
        time.sleep(poll_s)


def start_score_stream(
    spark: SparkSession,
    cfg: Config,
    *,
    available_now: bool = False,
    log: Log = print,
    cache: ModelCache | None = None,
    starting_version: str = "0",
    metrics: ScoreMetrics | None = None,
) -> StreamingQuery:
    """Wait for features and a model, then start user_features CDF -> score -> Kafka + Delta;
    each batch feeds ``metrics`` when given (the job serves them on /metrics)."""
    sc = cfg.scoring
    warehouse = cfg.warehouse_location()
    features_path = f"{warehouse}/user_features"
    checkpoint = cfg.checkpoint_location(sc.checkpoint_name)
    topic = cfg.kafka.topics.scores
    sink = ScoreSink(scores_path(warehouse), topic, spark_sink_options(cfg.kafka, "scorer"))
    check_checkpoint(spark, sink, checkpoint)
    ensure_topics(cfg.kafka, [topic], "scorer")
    cache = cache or model_cache(cfg, log)
    wait_for_features(spark, features_path, sc.wait_for_model_s, log)
    writer = app_id(checkpoint)
    # A restart while the champion is broken resumes with the model of our last scores.
    if cache.refresh(force=True) is None:
        last = sink.last_model(spark, writer)
        if last is not None and last[0] == cache.name:
            cache.resume(last[1])
    # Waiting here, before the query starts, keeps batches untouched until a model exists.
    cache.wait(sc.wait_for_model_s)
    rules = rules_from(cfg)
    emission = Emission(sc.emit, sc.min_delta)
    # Each user's latest record, read once here and then kept by the passes (scoring.latest).
    latest = LatestScores.of(sink.read(spark) if sink.exists(spark) else None)
    log(f"stream_scores: {len(latest):,} users with a latest record in {sink.path}")

    seen: list[int] = []

    def each_batch(changes: DataFrame, batch_id: int) -> None:
        # Structured Streaming re-runs only the batch it was in when it stopped, and only as
        # the first batch after a restart: later batches need no already-written check.
        result = process_batch(
            spark,
            changes,
            batch_id,
            cache=cache,
            rules=rules,
            emission=emission,
            sink=sink,
            latest=latest,
            writer=writer,
            may_be_replay=not seen,
        )
        seen.append(batch_id)
        log(f"stream_scores: {result.line()}")
        if metrics is not None:
            metrics.batch(batch_id, result.rows_in, result.seconds, result.step_seconds)
            if cache.current is not None:
                metrics.scored(
                    result.by_band,
                    result.lapsed,
                    result.emitted,
                    cache.current.name,
                    cache.current.version,
                )
        faults.reached("scores.written", batch_id)

    if not checkpoint_started(spark, checkpoint):
        # "latest" is resolved by Delta when the query starts: no version to name before.
        if starting_version == "latest":
            start = "from its next commit (latest)"
        else:
            newest, _ = table_version(spark, features_path)
            start = f"from version {starting_version} (newest: {newest})"
        log(f"stream_scores: new checkpoint {checkpoint}; scoring user_features {start}")
    stream = (
        spark.readStream.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", starting_version)
        .load(features_path)
    )
    query = start_foreach_batch(
        stream,
        "stream_scores",
        each_batch,
        checkpoint,
        trigger_s=sc.trigger_s,
        available_now=available_now,
    )
    if metrics is not None:
        metrics.watch(
            lambda: query.lastProgress,
            newest_version=lambda v: newest_version_from(spark, features_path, v),
        )
    return query


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config)
    with acting_as(cfg.mlflow, "scorer"):
        _main(args, cfg)


def _main(args: argparse.Namespace, cfg: Config) -> None:
    fail_fast()  # an unreachable registry must not hold a batch for minutes (decision 55)
    # Its batches are small jobs and commits around pandas: C1 is enough (decision 49).
    spark = build_spark(cfg, app_name="stream-scores", light_jit=True)
    m = cfg.monitoring
    query = start_score_stream(
        spark,
        cfg,
        available_now=args.available_now,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        starting_version=args.starting_version,
        metrics=serve(ScoreMetrics(), m.metrics_host, m.metrics_port.stream_scores),
    )
    run_until_stopped(spark, query)


if __name__ == "__main__":
    run(main, "stream_scores")
