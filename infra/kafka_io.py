"""Kafka client settings from config, for confluent-kafka and for Spark's Kafka source/sink.

Both client families get the same bootstrap servers and security settings; SASL
credentials are read from the environment at the last moment and never logged.
"""

from __future__ import annotations

from typing import Any

from infra.config import KafkaConfig

_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def client_config(kafka: KafkaConfig) -> dict[str, Any]:
    """librdkafka (confluent-kafka) settings: bootstrap servers plus security."""
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security.protocol,
    }
    if kafka.security.ssl_ca_location:
        conf["ssl.ca.location"] = kafka.security.ssl_ca_location
    creds = kafka.security.credentials()
    if creds is not None:
        conf["sasl.mechanism"] = kafka.security.sasl_mechanism
        conf["sasl.username"] = creds[0]
        conf["sasl.password"] = creds[1].get_secret_value()
    return conf


def producer_config(kafka: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """Throughput-oriented producer: lz4, batching, linger, idempotence (all from config)."""
    p = kafka.producer
    conf = {
        **client_config(kafka),
        "compression.type": p.compression_type,
        "linger.ms": p.linger_ms,
        "batch.size": p.batch_size,
        "max.in.flight.requests.per.connection": p.max_in_flight,
        "enable.idempotence": p.enable_idempotence,
        "acks": "all",
    }
    conf.update(overrides)
    return conf


def spark_options(kafka: KafkaConfig) -> dict[str, str]:
    """Options for Spark's Kafka source and sink (``kafka.``-prefixed consumer settings)."""
    opts = {
        "kafka.bootstrap.servers": kafka.bootstrap_servers,
        "kafka.security.protocol": kafka.security.protocol,
    }
    if kafka.security.ssl_ca_location:
        opts["kafka.ssl.truststore.location"] = kafka.security.ssl_ca_location
    creds = kafka.security.credentials()
    if creds is not None:
        module = _PLAIN_MODULE if kafka.security.sasl_mechanism == "PLAIN" else _SCRAM_MODULE
        user, password = creds[0], creds[1].get_secret_value()
        opts["kafka.sasl.mechanism"] = str(kafka.security.sasl_mechanism)
        opts["kafka.sasl.jaas.config"] = (
            f'{module} required username="{user}" password="{password}";'
        )
    return opts


def ensure_topics(kafka: KafkaConfig, topics: list[str], timeout_s: float = 30) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(kafka))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [t for t in topics if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                t, num_partitions=kafka.partitions, replication_factor=kafka.replication_factor
            )
            for t in missing
        ],
        request_timeout=timeout_s,
    )
    for _topic, future in futures.items():
        try:
            future.result()
        except Exception as exc:  # a concurrent creator is fine; anything else is not
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return missing
