"""Kafka client settings from config, for confluent-kafka and for Spark's Kafka source/sink.

Both client families get the same bootstrap servers and security settings. Each client
acts for a role (``KafkaRole``: producer, features, scorer, reader, admin), whose SASL
credentials are read from the environment at the last moment and never logged; on a secured
cluster each role is a principal with only the ACLs it needs (docs/security.md).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from infra.cli import Refused, Unreachable
from infra.config import REPO_ROOT, KafkaConfig, KafkaRole

_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def ca_file(kafka: KafkaConfig) -> str | None:
    """The CA file, a relative path taken from the repository root (as every local path)."""
    ca = kafka.security.ssl_ca_location
    return None if ca is None else str(REPO_ROOT / ca)  # an absolute path stays as it is


def client_config(kafka: KafkaConfig, role: KafkaRole) -> dict[str, Any]:
    """librdkafka (confluent-kafka) settings for ``role``: bootstrap servers plus security."""
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security.protocol,
    }
    if kafka.security.ssl_ca_location:
        conf["ssl.ca.location"] = ca_file(kafka)
    creds = kafka.security.credentials(role)
    if creds is not None:
        conf["sasl.mechanism"] = kafka.security.sasl_mechanism
        conf["sasl.username"] = creds[0]
        conf["sasl.password"] = creds[1].get_secret_value()
    return conf


def producer_config(kafka: KafkaConfig, role: KafkaRole, **overrides: Any) -> dict[str, Any]:
    """Throughput-oriented producer: lz4, batching, linger, idempotence (all from config)."""
    p = kafka.producer
    conf = {
        **client_config(kafka, role),
        "compression.type": p.compression_type,
        "linger.ms": p.linger_ms,
        "batch.size": p.batch_size,
        "max.in.flight.requests.per.connection": p.max_in_flight,
        "enable.idempotence": p.enable_idempotence,
        "acks": "all",
    }
    conf.update(overrides)
    return conf


def spark_options(kafka: KafkaConfig, role: KafkaRole) -> dict[str, str]:
    """Options for Spark's Kafka source and sink (``kafka.``-prefixed Java client settings)."""
    opts = {
        "kafka.bootstrap.servers": kafka.bootstrap_servers,
        "kafka.security.protocol": kafka.security.protocol,
    }
    if kafka.security.ssl_ca_location:
        # The Java client reads a truststore as JKS unless told otherwise; the CA is PEM.
        opts["kafka.ssl.truststore.type"] = "PEM"
        opts["kafka.ssl.truststore.location"] = str(ca_file(kafka))
    creds = kafka.security.credentials(role)
    if creds is not None:
        module = _PLAIN_MODULE if kafka.security.sasl_mechanism == "PLAIN" else _SCRAM_MODULE
        user, password = creds[0], creds[1].get_secret_value()
        opts["kafka.sasl.mechanism"] = str(kafka.security.sasl_mechanism)
        opts["kafka.sasl.jaas.config"] = (
            f'{module} required username="{user}" password="{password}";'
        )
    return opts


def spark_sink_options(kafka: KafkaConfig, role: KafkaRole) -> dict[str, str]:
    """``spark_options`` for Spark's Kafka sink: a write counts once every in-sync replica
    has it (acks=all; with min.insync.replicas 2 of 3, a lost broker loses nothing)."""
    return {**spark_options(kafka, role), "kafka.acks": "all"}


def ensure_topics(
    kafka: KafkaConfig, topics: list[str], role: KafkaRole, timeout_s: float = 30
) -> list[str]:
    """Create the topics that do not exist yet, as ``role``; returns the names it created.

    On a secured cluster a job's principal may not create topics: the administrator does
    (a secured local stack creates them at start), and a missing topic is :class:`Refused`.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    errors: list[Any] = []  # what the client met on the way, served by poll() below
    settings: dict[str, Any] = {"error_cb": errors.append, "logger": _quiet_logger()}
    admin = AdminClient(client_config(kafka, role) | settings)
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        admin.poll(0.5)
        refused = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        if refused:  # librdkafka's words name the mechanism, never the password
            raise Refused(
                f"the Kafka cluster at {kafka.bootstrap_servers} refused the {role} principal's "
                f"credentials ({refused[0].str()})"
            ) from exc
        seen = f"; {errors[0].str()}" if errors else ""
        raise Unreachable(
            f"no Kafka broker answers at {kafka.bootstrap_servers} ({exc.args[0].str()}{seen}); "
            "is the stack up (`make up`, `make status`)?"
        ) from exc
    missing = [t for t in topics if t not in existing]
    if not missing:
        return []
    settings = {}
    if kafka.min_insync_replicas is not None:
        settings["min.insync.replicas"] = str(kafka.min_insync_replicas)
    futures = admin.create_topics(
        [
            NewTopic(
                t,
                num_partitions=kafka.partitions,
                replication_factor=kafka.replication_factor or -1,  # -1: the cluster's default
                config=settings,
            )
            for t in missing
        ],
        request_timeout=timeout_s,
    )
    for topic, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:  # a concurrent creator is fine; anything else is not
            code = exc.args[0].code()
            if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise Refused(
                    f"topic {topic} does not exist (or {role} may not see it) and {role} may "
                    "not create it: on a secured cluster the administrator creates the topics"
                ) from exc
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return missing


def _quiet_logger() -> logging.Logger:
    """librdkafka's own log lines off: ensure_topics says what went wrong in one line."""
    logger = logging.getLogger("churn.kafka_io.quiet")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return logger


@dataclass
class ProduceStats:
    """What a producer run sent; ``failed`` counts delivery reports with an error."""

    produced: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.produced / self.seconds if self.seconds else 0.0


def produce(
    kafka: KafkaConfig,
    topic: str,
    records: Iterable[tuple[str | None, bytes]],
    *,
    role: KafkaRole = "producer",
    rate: float | None = None,
    progress_every_s: float = 5.0,
    label: str = "produce",
    out: TextIO = sys.stderr,
) -> ProduceStats:
    """Send (key, value) records to ``topic``, optionally at ``rate`` records/s, with progress.

    Every record's delivery is confirmed before returning (``flush``); failures are counted
    by error name, never dropped silently.
    """
    from confluent_kafka import Producer

    producer = Producer(producer_config(kafka, role))
    stats = ProduceStats()

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            stats.delivered += 1
        else:
            stats.failed += 1
            stats.errors[err.name()] = stats.errors.get(err.name(), 0) + 1

    start = last_report = time.monotonic()
    for key, value in records:
        while True:
            try:
                producer.produce(
                    topic,
                    key=None if key is None else key.encode(),
                    value=value,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:  # local queue full: let librdkafka drain it
                producer.poll(0.05)
        stats.produced += 1
        if stats.produced % 1000 == 0:
            producer.poll(0)
            now = time.monotonic()
            if rate:
                ahead = stats.produced / rate - (now - start)
                if ahead > 0:
                    time.sleep(ahead)
            if now - last_report >= progress_every_s:
                last_report = now
                print(
                    f"{label}: {stats.produced:,} records, {stats.produced / (now - start):,.0f}/s",
                    file=out,
                    flush=True,
                )
    producer.flush()
    stats.seconds = time.monotonic() - start
    print(
        f"{label}: {stats.produced:,} records to {topic} in {stats.seconds:.1f}s "
        f"({stats.rate:,.0f}/s), delivered {stats.delivered:,}, failed {stats.failed:,}",
        file=out,
        flush=True,
    )
    return stats


class EndOffsets:
    """The broker's end offset of each partition of a topic, asked when called (the
    metrics endpoint's lag, the demo's wait). An admin client's ListOffsets, which needs
    only Describe on the topic (a principal allowed to read it has that) and no consumer
    group: a consumer, even one that never subscribes, looks for its group's coordinator,
    which the secured stack's ACLs deny every principal but the reader."""

    def __init__(self, kafka: KafkaConfig, role: KafkaRole, timeout_s: float = 5.0) -> None:
        self.conf = client_config(kafka, role)
        self.timeout_s = timeout_s
        self._admin: Any = None
        self._lock = threading.Lock()

    def __call__(self, topic: str) -> dict[int, int]:
        from confluent_kafka import KafkaException, TopicPartition
        from confluent_kafka.admin import AdminClient, OffsetSpec

        with self._lock:
            try:
                if self._admin is None:
                    self._admin = AdminClient(self.conf, logger=_quiet_logger())
                meta = self._admin.list_topics(topic, timeout=self.timeout_s).topics[topic]
                if meta.error is not None:
                    return {}
                asked = {TopicPartition(topic, p): OffsetSpec.latest() for p in meta.partitions}
                futures = self._admin.list_offsets(asked, request_timeout=self.timeout_s)
                return {tp.partition: future.result().offset for tp, future in futures.items()}
            except KafkaException:  # unknown lag is left out of the scrape, not guessed
                return {}
