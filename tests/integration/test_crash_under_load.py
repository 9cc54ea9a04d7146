"""Both streaming jobs killed with SIGKILL five times each while events keep arriving, each
time in a window where a crash could lose or double work (infra/faults.py), and restarted:
nothing lost, nothing counted twice (docs/reliability.md).

A producer thread sends simulated events for the whole run. The feature stream dies right
after a batch's Delta commits, before its checkpoint commit; the scorer alternately after
its Kafka write and after its Delta append. Each restarts from its checkpoint. At the end
both drain what is left (trigger availableNow), and:

- bronze holds every produced event exactly once, the quarantine nothing, and the batches'
  record counts add up to what was produced;
- every derived feature table equals a rebuild from bronze;
- ``churn_scores`` holds each score once; the scores topic holds each of them, at least
  once (its duplicates, from the at-least-once Kafka sink, are counted and printed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer
from mlflow import MlflowClient

from infra import faults
from infra.config import REPO_ROOT
from infra.kafka_io import ensure_topics, producer_config
from scoring.sink import ScoreSink, scores_path
from sources.simulator import SimulationConfig, simulate
from store.tables import FeatureStore
from tests.integration.streaming import (
    assert_every_batch_once_and_tables_rebuildable,
    consume,
    scores_config,
)
from tests.scoring.models import register

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = 5
KILLED = re.compile(r"CHURN_FAULT: SIGKILL at [\w.]+ in batch (\d+)")


def start(job: str, config: Path, log: Path, *extra: str, fault: str | None = None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if fault:
        env[faults.ENV] = fault
    return subprocess.Popen(
        [sys.executable, "-m", f"jobs.{job}", "--config", str(config), *extra],
        cwd=REPO_ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )


def kill_cycles(
    job: str, points: list[str], config: Path, log: Path, out: dict, *, then_live: bool = False
) -> None:
    """Run ``job`` until it kills itself at each point in turn, one batch further each time;
    then, with ``then_live``, start it once more without a fault (``out["live"]``)."""
    at, proc = 1, None
    try:
        for point in points:
            seen = len(KILLED.findall(log.read_text(errors="replace"))) if log.exists() else 0
            proc = start(job, config, log, fault=f"{point}@{at}")
            rc = proc.wait(600)
            assert rc == -signal.SIGKILL, f"{job} exited {rc}: {log.read_text()[-3000:]}"
            killed = [int(n) for n in KILLED.findall(log.read_text(errors="replace"))]
            assert len(killed) == seen + 1, f"{job} died, but not at its fault point"
            out.setdefault("kills", []).append((point, killed[-1]))
            at = killed[-1] + 1
        if then_live:
            out["live_from"] = log.read_text(errors="replace").count(f"{job}: batch")
            out["live"] = start(job, config, log)
    except BaseException as exc:  # surfaced by the main thread
        out["error"] = exc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


class Traffic:
    """Simulated events sent at about ``rate`` a second until stopped; what was delivered."""

    def __init__(self, cfg, rate: float) -> None:
        self.cfg, self.rate = cfg, rate
        self.delivered: list[str] = []
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = Producer(producer_config(self.cfg.kafka))
        events = sorted(
            simulate(SimulationConfig(n_users=300, days=60, seed=17)),
            key=lambda e: e["event_time"],
        )
        started = time.monotonic()
        for n, event in enumerate(events):
            if self.stop.is_set():
                break
            producer.produce(
                self.cfg.kafka.topics.events,
                key=event["user_id"].encode(),
                value=json.dumps(event).encode(),
                on_delivery=self._delivered(event["event_id"]),
            )
            producer.poll(0)
            ahead = n / self.rate - (time.monotonic() - started)
            if ahead > 0:
                self.stop.wait(ahead)  # pacing the load, not waiting for anything
        producer.flush(60)

    def _delivered(self, event_id: str):
        def report(err, _msg) -> None:
            (self.failed if err else self.delivered).append(event_id)

        return report


def test_kills_under_load_lose_and_double_nothing(
    kafka_stack, mlflow_stack, base_config, spark, tmp_path
):
    cfg = scores_config(base_config, tmp_path, mlflow_stack.mlflow_uri)
    cfg = cfg.model_copy(
        update={
            "stream_features": cfg.stream_features.model_copy(
                update={"trigger_s": 0.5, "max_offsets_per_trigger": 1000}
            )
        }
    )
    config = tmp_path / "crash.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    ensure_topics(cfg.kafka, [cfg.kafka.topics.events, cfg.kafka.topics.scores])
    uri, name = cfg.mlflow.tracking_uri, cfg.mlflow.model_name
    version, _ = register(uri, name, "recency")
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        name, "champion", version
    )

    traffic = Traffic(cfg, rate=80)
    traffic.thread.start()
    features_log, scores_log = tmp_path / "features.log", tmp_path / "scores.log"
    cycles: dict[str, dict] = {"stream_features": {}, "stream_scores": {}}
    # The scorer scores feature commits: after its kills the feature stream runs on, live.
    feature_kills = threading.Thread(
        target=kill_cycles,
        args=("stream_features", ["features.committed"] * KILLS, config, features_log),
        kwargs={"out": cycles["stream_features"], "then_live": True},
        daemon=True,
    )
    feature_kills.start()
    try:
        kill_cycles(
            "stream_scores",
            ["scores.sent", "scores.written"] * (KILLS // 2) + ["scores.sent"] * (KILLS % 2),
            config,
            scores_log,
            cycles["stream_scores"],
        )
        feature_kills.join(900)
        assert not feature_kills.is_alive() and "error" not in cycles["stream_features"], cycles
        assert "error" not in cycles["stream_scores"], cycles["stream_scores"]["error"]
        # Stopped by SIGTERM once it runs batches (before, the signal would find no handler).
        done = cycles["stream_features"]["live_from"]
        deadline = time.monotonic() + 300
        while features_log.read_text(errors="replace").count("stream_features: batch") <= done:
            assert cycles["stream_features"]["live"].poll() is None, features_log.read_text()
            assert time.monotonic() < deadline, "the live feature stream ran no batch in time"
            time.sleep(0.5)
    finally:
        traffic.stop.set()
        traffic.thread.join(120)
        live = cycles["stream_features"].get("live")
        if live is not None:
            live.send_signal(signal.SIGTERM)
            try:
                live.wait(120)
            finally:
                if live.poll() is None:
                    os.killpg(live.pid, signal.SIGKILL)
    assert live is not None and live.returncode == 0, features_log.read_text()[-3000:]
    assert not traffic.failed
    # Drain: whatever arrived after the last kill, through both jobs, in large batches.
    drain = tmp_path / "drain.yaml"
    sf = cfg.stream_features.model_copy(update={"max_offsets_per_trigger": 400_000})
    drain.write_text(
        yaml.safe_dump(cfg.model_copy(update={"stream_features": sf}).model_dump(mode="json"))
    )
    for job, log in (("stream_features", features_log), ("stream_scores", scores_log)):
        proc = start(job, drain, log, "--available-now")
        try:
            assert proc.wait(600) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    produced = set(traffic.delivered)
    store = FeatureStore(cfg.storage.warehouse)
    bronze = store.read(spark, "events")
    assert {r["event_id"] for r in bronze.select("event_id").collect()} == produced
    assert not store.exists(spark, "quarantine") or store.read(spark, "quarantine").count() == 0
    assert_every_batch_once_and_tables_rebuildable(spark, store, len(produced), tmp_path)

    rows = ScoreSink(scores_path(cfg.storage.warehouse)).read(spark).collect()
    record_ids = [r["record_id"] for r in rows]
    assert len(record_ids) == len(set(record_ids))
    assert len({(r["batch_id"], r["user_id"]) for r in rows}) == len(rows)
    messages = consume(cfg, len(rows))
    on_topic = Counter(value["record_id"] for _, value in messages)
    assert set(on_topic) == set(record_ids)
    first: dict[str, dict] = {}
    for _, value in messages:  # a re-sent record is the same record
        assert first.setdefault(value["record_id"], value) == value
    doubled = sum(n - 1 for n in on_topic.values())
    print(
        f"\ncrash under load: {len(produced):,} events produced, {len(produced):,} in bronze "
        f"once each, 0 lost, 0 doubled; kills {cycles['stream_features']['kills']} (features) "
        f"{cycles['stream_scores']['kills']} (scorer); churn_scores {len(rows):,} rows, "
        f"no duplicate; scores topic {sum(on_topic.values()):,} records, {doubled} re-sent"
    )
