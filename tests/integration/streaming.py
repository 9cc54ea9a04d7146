"""Helpers shared by the streaming integration tests (not a test module)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from features.aggregates import DAILY_COLUMNS
from infra.config import Config
from infra.kafka_io import client_config, ensure_topics, producer_config
from jobs.stream_features import start_feature_stream
from store.ingest import rebuild
from store.tables import FeatureStore

MAX_BYTES = 4096


def stream_config(base: Config, tmp_path, name: str) -> Config:
    """base_config with this scenario's own topics, warehouse and checkpoints."""
    suffix = f"{name}-{uuid.uuid4().hex[:6]}"
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(
                update={
                    "topics": base.kafka.topics.model_copy(
                        update={"events": f"events-{suffix}", "dlq": f"dlq-{suffix}"}
                    )
                }
            ),
            "storage": base.storage.model_copy(
                update={
                    "warehouse": str(tmp_path / "warehouse"),
                    "checkpoints": str(tmp_path / "checkpoints"),
                }
            ),
            "stream_features": base.stream_features.model_copy(
                update={"max_value_bytes": MAX_BYTES}
            ),
        }
    )


def run_stream(spark, cfg: Config, lines: list[str] | None = None) -> None:
    """Run the real feature stream until the topic is drained (trigger availableNow)."""
    query = start_feature_stream(
        spark, cfg, available_now=True, log=(lines.append if lines is not None else print)
    )
    try:
        query.awaitTermination(600)
    finally:
        query.stop()
    assert query.exception() is None


def send(cfg: Config, records: list[tuple[bytes | None, bytes | None]]) -> None:
    ensure_topics(cfg.kafka, [cfg.kafka.topics.events])
    producer = Producer(producer_config(cfg.kafka))
    failed = []
    for key, value in records:
        # One partition keeps offsets predictable for the assertions below.
        producer.produce(
            cfg.kafka.topics.events,
            key=key,
            value=value,
            partition=0,
            on_delivery=lambda err, _msg: err and failed.append(err),
        )
    assert producer.flush(30) == 0
    assert failed == []


def scores_config(base: Config, tmp_path: Path, mlflow_uri: str) -> Config:
    """A stream_config plus its own scores topic, model name and quick scorer timings."""
    cfg = stream_config(base, tmp_path, "scores")
    suffix = uuid.uuid4().hex[:6]
    return cfg.model_copy(
        update={
            "kafka": cfg.kafka.model_copy(
                update={
                    "topics": cfg.kafka.topics.model_copy(update={"scores": f"scores-{suffix}"})
                }
            ),
            "mlflow": cfg.mlflow.model_copy(
                update={"tracking_uri": mlflow_uri, "model_name": f"churn-{suffix}"}
            ),
            "scoring": cfg.scoring.model_copy(update={"trigger_s": 0.5, "wait_for_model_s": 0.5}),
        }
    )


def consume(cfg: Config, at_least: int, idle_s: float = 5.0) -> list[tuple[str, dict]]:
    """(key, JSON value) of the scores topic: at least ``at_least``, then until idle."""
    consumer = Consumer(
        {
            **client_config(cfg.kafka),
            "group.id": f"t-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([cfg.kafka.topics.scores])
    got: list[tuple[str, dict]] = []
    deadline, quiet_since = time.monotonic() + 90, time.monotonic()
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key().decode(), json.loads(msg.value())))
            quiet_since = time.monotonic()
        elif len(got) >= at_least and time.monotonic() - quiet_since > idle_s:
            break
    consumer.close()
    return got


def assert_every_batch_once_and_tables_rebuildable(spark, store, produced: int, scratch) -> None:
    """After crashes and restarts: the batches' records add up to ``produced``, their ids
    run 0..n, bronze holds ``produced`` distinct events, and every derived table equals a
    rebuild from bronze (in ``scratch``)."""
    batches = store.read(spark, "feature_batches")
    assert batches.agg(F.sum("records")).first()[0] == produced
    ids = [r["batch_id"] for r in batches.orderBy("batch_id").collect()]
    assert ids == list(range(len(ids)))
    bronze = store.read(spark, "events")
    assert bronze.count() == bronze.select("event_id").distinct().count() == produced

    rebuilt = FeatureStore(str(scratch / "rebuilt"))
    rebuild(spark, rebuilt, bronze.drop("event_date", "ingest_batch_id"))
    for table, cols in (
        ("user_activity_daily", list(DAILY_COLUMNS)),
        ("user_lifetime", None),
        ("user_features", None),
    ):
        a, b = store.read(spark, table), rebuilt.read(spark, table)
        if cols:
            a, b = a.select(*cols), b.select(*cols)
        assertDataFrameEqual(a, b)
