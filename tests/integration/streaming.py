"""Helpers shared by the streaming integration tests (not a test module)."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer

from infra.config import Config
from infra.kafka_io import ensure_topics, producer_config
from jobs.stream_features import start_feature_stream

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
