"""Shared fixtures: one SparkSession for the run, and the real local stack on demand.

The broker and MLflow server are session fixtures, started only when a test asks for them:
in a temporary state dir on free loopback ports, or, with ``CHURN_TEST_STACK=running``,
the stack `make up` started (conf/local.yaml's addresses).
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from infra import stack as local_stack
from infra.config import Config, MetricsPorts, MonitoringConfig, load_config
from infra.spark import build_spark

USE_RUNNING = os.environ.get("CHURN_TEST_STACK") == "running"


# Below the kernels' ephemeral ranges (Linux 32768-60999, macOS and Windows 49152-65535).
# A port the kernel hands out as a client's source port can be taken while a test's server
# is down: a client retrying a killed broker's port in that range may even connect to
# itself. A CI run lost its restarted broker that way ("Address already in use").
_SERVER_PORTS = range(20000, 32768)

# Jobs the tests start serve no /metrics, unless a test asks for an endpoint
# (tests/integration/test_metrics.py): 9108/9109 stay free, and parallel jobs never clash.
NO_METRICS = MonitoringConfig(metrics_port=MetricsPorts(stream_features=0, stream_scores=0))


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive loopback ports that are free now, outside the
    ephemeral range, so that a server stopped and restarted on one can bind it again."""
    rng = random.SystemRandom()
    for _ in range(1000):
        first = rng.randrange(_SERVER_PORTS.start, _SERVER_PORTS.stop - n)
        try:
            for port in range(first, first + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {n} consecutive free ports in {_SERVER_PORTS}")


def free_port() -> int:
    """A loopback port that is free now (free_ports)."""
    return free_ports(1)


@pytest.fixture(scope="session")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """conf/local.yaml, with every piece of state in this run's temp dir and its own ports."""
    cfg = load_config("local", environ={})
    if USE_RUNNING:
        return cfg
    root = tmp_path_factory.mktemp("stack")
    ports = [free_port() for _ in range(3)]
    return cfg.model_copy(
        update={
            "local_stack": cfg.local_stack.model_copy(
                update={
                    "state_dir": root / "stack",
                    "kafka_port": ports[0],
                    "kafka_controller_port": ports[1],
                    "mlflow_port": ports[2],
                }
            ),
            "kafka": cfg.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{ports[0]}"}),
            "mlflow": cfg.mlflow.model_copy(
                update={"tracking_uri": f"http://127.0.0.1:{ports[2]}"}
            ),
            "storage": cfg.storage.model_copy(
                update={
                    "warehouse": str(root / "warehouse"),
                    "checkpoints": str(root / "checkpoints"),
                }
            ),
            "spark": cfg.spark.model_copy(update={"shuffle_partitions": 2}),
            "monitoring": NO_METRICS,
        }
    )


@pytest.fixture(scope="session")
def spark(base_config: Config) -> Iterator[SparkSession]:
    session = build_spark(base_config, app_name="churn-tests")
    yield session
    session.stop()


def _service(cfg: Config, start, stop) -> Iterator[local_stack.Stack]:
    stack = local_stack.Stack.from_config(cfg)
    if USE_RUNNING:
        yield stack
        return
    start(stack)
    try:
        yield stack
    finally:
        stop(stack)


@pytest.fixture(scope="session")
def kafka_stack(base_config: Config) -> Iterator[local_stack.Stack]:
    """A real Kafka broker (KRaft) on loopback for the whole test session."""
    yield from _service(base_config, local_stack.start_kafka, local_stack.stop_kafka)


@pytest.fixture(scope="session")
def mlflow_stack(base_config: Config) -> Iterator[local_stack.Stack]:
    """A real MLflow tracking server (SQLite store, local artifacts) for the test session."""
    yield from _service(
        base_config, local_stack.start_mlflow, lambda s: local_stack.stop_service(s, "mlflow")
    )


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
