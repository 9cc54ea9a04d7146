"""The local stack as a user drives it: Kafka's own CLI, the MLflow health endpoint, restarts."""

import os
import signal
import subprocess
import time
import urllib.request

import pytest

from infra import stack as local_stack
from infra.config import load_config
from infra.kafka_io import ensure_topics
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_kafka_cli_from_fetched_jars_lists_topics(kafka_stack, base_config):
    created = ensure_topics(base_config.kafka, ["cli-visible-topic"], "admin")
    assert created in (["cli-visible-topic"], [])  # [] only when reusing a running stack
    out = subprocess.run(
        local_stack.kafka_java(
            kafka_stack,
            local_stack.KAFKA_TOOLS["kafka-topics"][0],
            ["--bootstrap-server", kafka_stack.bootstrap, "--list"],
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert "cli-visible-topic" in out
    assert ensure_topics(base_config.kafka, ["cli-visible-topic"], "admin") == []


def test_starting_twice_is_harmless(kafka_stack):
    if os.environ.get("CHURN_TEST_STACK") == "running":
        pytest.skip("reusing a running stack")
    pid = local_stack.running_pid(kafka_stack, "kafka")
    assert pid is not None
    assert local_stack.start_kafka(kafka_stack) == f"kafka already running (pid {pid})"
    assert local_stack.running_pid(kafka_stack, "kafka") == pid


def test_mlflow_health_endpoint_answers(mlflow_stack):
    with urllib.request.urlopen(f"{mlflow_stack.mlflow_uri}/health", timeout=5) as resp:
        assert (resp.status, resp.read().strip()) == (200, b"OK")


def wait_until(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_up_status_down_leaves_nothing_behind(tmp_path):
    """A second, private stack: up answers, down stops exactly its processes and frees ports."""
    cfg = load_config(
        "local",
        environ={
            "CHURN__LOCAL_STACK__STATE_DIR": str(tmp_path / "stack"),
            "CHURN__LOCAL_STACK__KAFKA_PORT": str(free_port()),
            "CHURN__LOCAL_STACK__KAFKA_CONTROLLER_PORT": str(free_port()),
            "CHURN__LOCAL_STACK__MLFLOW_PORT": str(free_port()),
        },
    )
    stack = local_stack.Stack.from_config(cfg)
    local_stack.up(stack)
    try:
        assert local_stack.status(stack) is True
        pids = [local_stack.running_pid(stack, s) for s in ("kafka", "mlflow")]
        assert all(pids)
    finally:
        local_stack.down(stack)
    assert local_stack.status(stack) is False
    assert [local_stack.running_pid(stack, s) for s in ("kafka", "mlflow")] == [None, None]
    for port in (stack.kafka_port, stack.controller_port, stack.mlflow_port):
        assert not local_stack._port_open(stack.host, port), port
    for pid in pids:
        assert not local_stack._pid_alive(pid)


def test_a_killed_mlflow_server_leaves_no_orphan_behind(tmp_path):
    """`kill -9` of the server's recorded pid leaves its uvicorn worker serving the port:
    `down` stops it, and so does `up`, which then starts a fresh server (decision 51)."""
    cfg = load_config(
        "local",
        environ={
            "CHURN__LOCAL_STACK__STATE_DIR": str(tmp_path / "stack"),
            "CHURN__LOCAL_STACK__MLFLOW_PORT": str(free_port()),
        },
    )
    stack = local_stack.Stack.from_config(cfg)

    def kill_the_server() -> list[int]:
        server = local_stack.running_pid(stack, "mlflow")
        assert server is not None
        workers = [p.pid for p in local_stack.members(stack, "mlflow") if p.pid != server]
        assert workers, "the server runs its app in a worker process"
        os.kill(server, signal.SIGKILL)
        wait_until(lambda: not local_stack._pid_alive(server))
        assert local_stack.running_pid(stack, "mlflow") is None
        assert local_stack.mlflow_ready(stack.mlflow_uri), "the orphan still serves"
        return workers

    try:
        local_stack.start_mlflow(stack)
        orphans = kill_the_server()
        assert sorted(local_stack.stop_service(stack, "mlflow")) == sorted(orphans)
        assert not local_stack._port_open(stack.host, stack.mlflow_port)

        local_stack.start_mlflow(stack)
        orphans = kill_the_server()
        started = local_stack.start_mlflow(stack)
        assert started.startswith(f"stopped orphans of an earlier mlflow (pids {orphans});")
        assert local_stack.mlflow_ready(stack.mlflow_uri)
        assert all(not local_stack._pid_alive(pid) for pid in orphans)
    finally:
        local_stack.stop_service(stack, "mlflow")
    assert local_stack.members(stack, "mlflow") == []
