"""MLflow's tracking server goes away (decision 55): the scorer keeps scoring with the model
it has, says so once, and follows the alias again when the server is back; training fails
at once with one message. The server here is a private one, stopped and started again on
its own database, so the session's shared server never goes down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from mlflow import MlflowClient
from pyspark.sql import functions as F

from infra import stack as local_stack
from infra.config import REPO_ROOT, load_config
from sources.simulator import SimulationConfig, simulate
from store.tables import FeatureStore, Txn, append
from tests.conftest import free_port
from tests.integration.streaming import run_stream, send, stream_config
from tests.scoring.models import register

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_for_text(job: subprocess.Popen, log, text: str, timeout_s: float = 180) -> str:
    deadline = time.monotonic() + timeout_s
    while text not in (content := log.read_text(errors="replace")):
        assert job.poll() is None, content[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in the scorer's log in time"
        time.sleep(0.2)
    return content


def test_the_scorer_rides_out_a_tracking_server_outage(kafka_stack, base_config, spark, tmp_path):
    server = local_stack.Stack.from_config(
        load_config(
            "local",
            environ={
                "CHURN__LOCAL_STACK__STATE_DIR": str(tmp_path / "stack"),
                "CHURN__LOCAL_STACK__MLFLOW_PORT": str(free_port()),
            },
        )
    )
    local_stack.start_mlflow(server)
    try:
        _outage(server, base_config, spark, tmp_path)
    finally:
        local_stack.stop_service(server, "mlflow")


def _outage(server, base_config, spark, tmp_path) -> None:
    uri, name = server.mlflow_uri, f"outage-{uuid.uuid4().hex[:6]}"
    cfg = stream_config(base_config, tmp_path, "outage")
    cfg = cfg.model_copy(
        update={
            "mlflow": cfg.mlflow.model_copy(update={"tracking_uri": uri, "model_name": name}),
            "kafka": cfg.kafka.model_copy(
                update={"topics": cfg.kafka.topics.model_copy(update={"scores": f"scores-{name}"})}
            ),
        }
    )
    events = list(simulate(SimulationConfig(n_users=30, days=7, seed=9)))
    send(cfg, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
    run_stream(spark, cfg)
    features = FeatureStore(cfg.storage.warehouse)
    users = [
        r["user_id"] for r in features.read(spark, "user_features").select("user_id").collect()
    ]

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    v1, v2 = register(uri, name, "recency")[0], register(uri, name, "sessions")[0]
    client.set_registered_model_alias(name, "champion", v1)

    def touch(n: int) -> None:
        """A new feature vector for one user: a scorer batch."""
        changed = (
            features.read(spark, "user_features")
            .where(F.col("user_id") == users[n % len(users)])
            .withColumn("batch_id", F.lit(5000 + n).cast("long"))
        )
        append(changed, features.path("user_features"), Txn("outage", n))

    config_path = tmp_path / "scores.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    log = tmp_path / "scorer.log"
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.stream_scores", "--config", str(config_path)],
        cwd=REPO_ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        text = wait_for_text(job, log, "stream_scores: batch 0:")
        assert f"{name} v{v1} at alias champion" in text

        local_stack.stop_service(server, "mlflow")
        assert not local_stack.mlflow_ready(uri)
        for n in (1, 2, 3):  # three batches, each one resolving the alias in vain
            touch(n)
            text = wait_for_text(job, log, f"stream_scores: batch {n}:")
        batches = [line for line in text.splitlines() if line.startswith("stream_scores: batch")]
        for n in (1, 2, 3):
            assert "1 users scored" in batches[n] and f"{name} v{v1}" in batches[n], batches[n]
        assert "resolve_failures=3" in batches[3]
        assert text.count(f"cannot resolve alias champion of {name}") == 1

        local_stack.start_mlflow(server)  # the same database: the same registry
        client.set_registered_model_alias(name, "champion", v2)
        touch(4)
        text = wait_for_text(job, log, "stream_scores: batch 4:")
        assert "model: the registry answers again" in text
        assert f"now scoring with {name} v{v2} at alias champion (was v{v1})" in text

        job.send_signal(signal.SIGTERM)
        assert job.wait(120) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)


def test_training_without_its_tracking_server_fails_at_once(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "jobs.train"],
        cwd=REPO_ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CHURN")},
            "CHURN__MLFLOW__TRACKING_URI": closed,
            "CHURN__TRAINING__STATE_DIR": str(tmp_path / "state"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr
    # One line, before any work: no run started, nothing registered, no retries for minutes.
    [line] = done.stderr.splitlines()
    assert line.startswith(f"train: the MLflow tracking server at {closed} does not answer (")
    assert not (tmp_path / "state").exists()
