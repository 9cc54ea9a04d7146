"""Stream behaviour events from Kafka into the Delta feature store (spark-submit entry point).

One Kafka read; each micro-batch is validated, deduplicated and applied to the bronze,
silver and gold tables by store.ingest.process_batch, idempotently per batch. Rejected
records go to the dead-letter topic and the quarantine table with their reason.

  python -m jobs.stream_features                 # run until stopped (Ctrl-C)
  python -m jobs.stream_features --available-now # drain what is in the topic, then stop
  python -m infra.submit --cores 1 stream_features  # on a Spark cluster (make submit)
"""

from __future__ import annotations

import argparse
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from infra import faults
from infra.cli import add_config_arguments, run
from infra.config import Config, load_config
from infra.kafka_io import EndOffsets, ensure_topics, spark_options, spark_sink_options
from infra.metrics import FeatureMetrics, serve
from infra.spark import build_spark
from infra.streaming import (
    checkpoint_started,
    query_app_id,
    run_until_stopped,
    start_foreach_batch,
)
from store.ingest import DataQualityError, IngestRules, last_batch, process_batch
from store.state import StreamState
from store.tables import FeatureStore


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.stream_features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument(
        "--available-now",
        action="store_true",
        help="process everything in the topic now, then stop (trigger availableNow)",
    )
    return p.parse_args(argv)


def app_id(checkpoint: str) -> str:
    """The idempotency id of this query's writes: stable for as long as its checkpoint lives."""
    return query_app_id("stream_features", checkpoint)


def ingest_rules(cfg: Config) -> IngestRules:
    """The validation limits and event-time rules of ``stream_features`` (stream and backfill)."""
    sf = cfg.stream_features
    return IngestRules(
        max_value_bytes=sf.max_value_bytes,
        max_future_skew_s=sf.max_future_skew_s,
        allowed_lateness_s=sf.allowed_lateness_s,
        earliest_event_time=sf.earliest_event_time,
        dq_stop_on=sf.dq_stop_on,
    )


def check_checkpoint(spark: SparkSession, store: FeatureStore, checkpoint: str) -> None:
    """Refuse to start from a lost checkpoint over tables that earlier batches already fed."""
    prev = last_batch(spark, store, app_id(checkpoint))
    if prev is not None and not checkpoint_started(spark, checkpoint):
        raise SystemExit(
            f"stream_features: the checkpoint {checkpoint} is gone, but the feature store holds "
            f"batches up to {prev['batch_id']} written through it. Restore the checkpoint, or "
            "reset both the tables and the checkpoint (see docs/operations.md) to reprocess."
        )


def start_feature_stream(
    spark: SparkSession,
    cfg: Config,
    *,
    available_now: bool = False,
    log=print,
    metrics: FeatureMetrics | None = None,
) -> StreamingQuery:
    """Wire Kafka -> process_batch -> Delta (+ DLQ topic) and start the query; each batch
    feeds ``metrics`` when given (the job serves them on /metrics)."""
    sf = cfg.stream_features
    store = FeatureStore(cfg.warehouse_location())
    checkpoint = cfg.checkpoint_location(sf.checkpoint_name)
    check_checkpoint(spark, store, checkpoint)
    topics = cfg.kafka.topics
    ensure_topics(cfg.kafka, [topics.events, topics.dlq], "features")
    rules = ingest_rules(cfg)
    the_app = app_id(checkpoint)
    # The hot state lives as long as the query: loaded from the tables now, kept in step by
    # every batch (a query started again loads it again). Its id index lives and dies with
    # a local checkpoint (decision 59), or in stream_features.id_index_dir.
    if sf.id_index_dir is not None:
        ids_dir = cfg.resolve(sf.id_index_dir)
    else:  # the config refuses a remote checkpoint without an id_index_dir
        local = cfg.local_dir(checkpoint)
        assert local is not None
        ids_dir = local / "event-ids"
    state = StreamState.load(spark, store, the_app, rules.allowed_lateness_s, ids_dir=ids_dir)

    dlq_options = spark_sink_options(cfg.kafka, "features")  # once, not per batch

    def to_dlq(rejects: DataFrame) -> None:
        # The original bytes, untouched, with the reason and source coordinates as headers.
        (
            rejects.select(
                F.col("raw_key").alias("key"),
                F.col("raw_value").alias("value"),
                F.array(
                    *[
                        F.struct(
                            F.lit(f"dlq.{name}").alias("key"),
                            F.col(col).cast("string").cast("binary").alias("value"),
                        )
                        for name, col in (
                            ("reason", "reject_reason"),
                            ("topic", "source_topic"),
                            ("partition", "source_partition"),
                            ("offset", "source_offset"),
                        )
                    ]
                ).alias("headers"),
            )
            .write.format("kafka")
            .options(**dlq_options)
            .option("topic", topics.dlq)
            .save()
        )

    def each_batch(batch: DataFrame, batch_id: int) -> None:
        try:
            result = process_batch(
                spark,
                store,
                batch,
                batch_id,
                rules,
                the_app,
                on_rejects=to_dlq if sf.dlq_to_kafka else None,
                state=state,
            )
        except DataQualityError as exc:  # counted and said, then the query stops
            if metrics is not None:
                metrics.violations(exc.result.dq, rules.expectations.severity)
            log(f"stream_features: {exc}")
            raise
        log(f"stream_features: {result.line()}")
        if metrics is not None:
            metrics.batch(batch_id, result.records, result.seconds, result.step_seconds)
            metrics.features(
                result.valid, result.reasons, result.users_updated, result.as_of, result.clock
            )
            metrics.violations(result.dq, rules.expectations.severity)
        faults.reached("features.committed", batch_id)

    reader = (
        spark.readStream.format("kafka")
        .options(**spark_options(cfg.kafka, "features"))
        .option("subscribe", topics.events)
        .option("startingOffsets", sf.starting_offsets)
        .option("failOnDataLoss", "true")
    )
    if sf.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(sf.max_offsets_per_trigger))
    query = start_foreach_batch(
        reader.load(),
        "stream_features",
        each_batch,
        checkpoint,
        trigger_s=sf.trigger_s,
        available_now=available_now,
    )
    if metrics is not None:
        metrics.watch(lambda: query.lastProgress, end_offsets=EndOffsets(cfg.kafka, "features"))
    return query


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config)
    spark = build_spark(cfg, app_name="stream-features")
    m = cfg.monitoring
    metrics = serve(FeatureMetrics(), m.metrics_host, m.metrics_port.stream_features)
    query = start_feature_stream(
        spark,
        cfg,
        available_now=args.available_now,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        metrics=metrics,
    )
    run_until_stopped(spark, query)


if __name__ == "__main__":
    run(main, "stream_features")
