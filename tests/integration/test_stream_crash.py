"""Kill -9 the feature stream mid-run, restart it from its checkpoint: nothing lost or doubled.
Ctrl-C (or SIGTERM) stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

from infra import faults
from sources.simulator import SimulationConfig, simulate
from store.tables import FeatureStore
from tests.integration.streaming import (
    assert_every_batch_once_and_tables_rebuildable,
    send,
    stream_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def start_job(config_path, log_path, *extra: str, fault: str | None = None) -> subprocess.Popen:
    """The job in its own process group; ``fault``: where it kills itself (infra/faults.py)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if fault:
        env[faults.ENV] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.stream_features", "--config", str(config_path), *extra],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )


def wait_for_line(
    job: subprocess.Popen, log, text: str, timeout_s: float = 300, poll_s: float = 0.5
) -> None:
    """Poll the job's log until it holds ``text``; fail if the job dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        assert job.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in the job's log in time"
        time.sleep(poll_s)


def test_killed_stream_restarts_without_losing_or_double_counting(
    kafka_stack, base_config, spark, tmp_path
):
    cfg = stream_config(base_config, tmp_path, "crash")
    cfg = cfg.model_copy(
        update={
            "stream_features": cfg.stream_features.model_copy(
                update={"trigger_s": 1, "max_offsets_per_trigger": 1000}
            )
        }
    )
    config_path = tmp_path / "crash.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    events = list(simulate(SimulationConfig(n_users=120, days=20, seed=11)))
    send(cfg, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
    store = FeatureStore(cfg.storage.warehouse)

    log = tmp_path / "job.log"
    # The job kills itself (SIGKILL, its JVM too) once batch 1 has committed to Delta and
    # before its checkpoint commit: the window where a crash could lose or double a batch.
    job = start_job(config_path, log, fault="features.committed@1")
    try:
        assert job.wait(600) == -signal.SIGKILL, log.read_text(errors="replace")[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert "CHURN_FAULT: SIGKILL at features.committed in batch 1" in log.read_text()
    assert store.read(spark, "feature_batches").count() == 2
    commits = Path(cfg.storage.checkpoints) / cfg.stream_features.checkpoint_name / "commits"
    assert sorted(p.name for p in commits.iterdir() if p.name.isdigit()) == ["0"]
    assert len(events) > 2 * 1000, "more batches after the restart"

    restarted = start_job(config_path, log, "--available-now")
    assert restarted.wait(600) == 0, log.read_text(errors="replace")[-3000:]

    assert_every_batch_once_and_tables_rebuildable(spark, store, len(events), tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_live_stream_cleanly(kafka_stack, base_config, spark, tmp_path, sig):
    """What the README promises for `jobs.stream_features` (Ctrl-C stops): exit 0, no
    traceback, and what it had committed is there (docs/decisions.md 35)."""
    cfg = stream_config(base_config, tmp_path, "signal")
    config_path = tmp_path / "signal.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    events = list(simulate(SimulationConfig(n_users=20, days=3, seed=5)))
    send(cfg, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])

    log = tmp_path / "job.log"
    job = start_job(config_path, log)
    try:
        wait_for_line(job, log, "stream_features: batch 0:")
        if sig == signal.SIGINT:  # as a terminal sends Ctrl-C: to the whole process group
            os.killpg(job.pid, sig)
        else:  # as a scheduler stops a job: to its main process (the JVM would stop itself)
            os.kill(job.pid, sig)
        rc = job.wait(120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text and "stream_features: stopping (signal received)" in text
    batches = FeatureStore(cfg.storage.warehouse).read(spark, "feature_batches")
    assert batches.agg(F.sum("records")).first()[0] == len(events)
