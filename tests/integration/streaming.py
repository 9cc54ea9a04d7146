"""Helpers shared by the streaming integration tests (not a test module)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import yaml
from confluent_kafka import Consumer, Producer
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from features.aggregates import DAILY_COLUMNS
from infra import faults
from infra.config import REPO_ROOT, Config
from infra.kafka_io import client_config, ensure_topics, producer_config
from jobs.stream_features import start_feature_stream
from scoring.sink import ScoreSink, scores_path
from sources.simulator import SimulationConfig, simulate
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
    ensure_topics(cfg.kafka, [cfg.kafka.topics.events], "admin")
    producer = Producer(producer_config(cfg.kafka, "producer"))
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


def champion(cfg: Config) -> None:
    """A small registered model (tests/scoring/models.py) at the scorer's alias."""
    from mlflow import MlflowClient

    from tests.scoring.models import register

    uri, name = cfg.mlflow.tracking_uri, cfg.mlflow.model_name
    version, _ = register(uri, name, "recency")
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        name, cfg.scoring.model_alias, version
    )


def consume(cfg: Config, at_least: int, idle_s: float = 5.0) -> list[tuple[str, dict]]:
    """(key, JSON value) of the scores topic: at least ``at_least``, then until idle."""
    consumer = Consumer(
        {
            **client_config(cfg.kafka, "admin"),
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


def write_config(cfg: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def start(job: str, config: Path, log: Path, *extra: str, fault: str | None = None):
    """``python -m jobs.<job>`` in its own process group, output appended to ``log``."""
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


def batches(log: Path, job: str) -> int:
    """How many micro-batches ``job`` has logged (each logs "<job>: batch N: ...")."""
    return log.read_text(errors="replace").count(f"{job}: batch") if log.exists() else 0


def wait_for(condition, what: str, timeout_s: float = 300, alive=()) -> None:
    """Poll ``condition`` until true; fail after ``timeout_s`` or when a process in ``alive``
    (pairs of Popen and its log) has exited."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for proc, log in alive:
            assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not in {timeout_s:.0f}s: {what}"
        time.sleep(0.2)


def stop_gracefully(proc, log: Path) -> None:
    """SIGTERM, then the job must exit 0 with one line and no trace (decisions 35, 58)."""
    seen = len(log.read_text(errors="replace"))
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    after = log.read_text(errors="replace")[seen:]
    assert rc == 0, after[-3000:]
    assert "stopping (signal received)" in after
    for trace in ("Traceback", "Exception in thread", "StackOverflowError"):
        assert trace not in after, after[-3000:]


def drain(cfg: Config, tmp_path: Path, logs: dict[str, Path]) -> None:
    """Run both jobs once more (trigger availableNow, large batches) over what is left."""
    sf = cfg.stream_features.model_copy(update={"max_offsets_per_trigger": 400_000})
    config = write_config(cfg.model_copy(update={"stream_features": sf}), tmp_path / "drain.yaml")
    for job in ("stream_features", "stream_scores"):
        proc = start(job, config, logs[job], "--available-now")
        try:
            assert proc.wait(600) == 0, logs[job].read_text()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


class Traffic:
    """Simulated events sent at about ``rate`` a second until stopped, acks=all; what was
    handed to the producer (``sent``) and what it confirmed or failed."""

    def __init__(self, cfg: Config, rate: float) -> None:
        self.cfg, self.rate = cfg, rate
        self.sent = 0
        self.delivered: list[str] = []
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = Producer(producer_config(self.cfg.kafka, "producer"))
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
            self.sent += 1
            producer.poll(0)
            ahead = n / self.rate - (time.monotonic() - started)
            if ahead > 0:
                self.stop.wait(ahead)  # pacing the load, not waiting for anything
        producer.flush(120)

    def _delivered(self, event_id: str):
        def report(err, _msg) -> None:
            (self.failed if err else self.delivered).append(event_id)

        return report

    def finish(self) -> set[str]:
        """Stop sending, wait for every delivery report; the delivered event ids."""
        self.stop.set()
        self.thread.join(180)
        assert not self.thread.is_alive(), "the producer did not finish"
        assert not self.failed, f"{len(self.failed)} deliveries failed"
        assert len(self.delivered) == self.sent, (len(self.delivered), self.sent)
        return set(self.delivered)


def assert_nothing_lost_or_doubled(spark, cfg: Config, produced: set[str], scratch: Path) -> str:
    """Bronze holds every produced event once and the quarantine none, every derived table
    equals a rebuild, ``churn_scores`` has no duplicate, and the scores topic holds each of
    its records (re-sent ones, from the at-least-once Kafka sink, identical). Returns a
    one-line summary with the counts."""
    store = FeatureStore(cfg.storage.warehouse)
    bronze = store.read(spark, "events")
    assert {r["event_id"] for r in bronze.select("event_id").collect()} == produced
    assert not store.exists(spark, "quarantine") or store.read(spark, "quarantine").count() == 0
    assert_every_batch_once_and_tables_rebuildable(spark, store, len(produced), scratch)

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
    return (
        f"{len(produced):,} events produced, {len(produced):,} in bronze once each, 0 lost, "
        f"0 doubled; churn_scores {len(rows):,} rows, no duplicate; scores topic "
        f"{sum(on_topic.values()):,} records, {doubled} re-sent"
    )


KILLED = re.compile(r"CHURN_FAULT: SIGKILL at [\w.]+ in batch (\d+)")


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
            out["live_from"] = batches(log, job)
            out["live"] = start(job, config, log)
    except BaseException as exc:  # surfaced by the main thread
        out["error"] = exc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def kills_under_load(
    cfg: Config, tmp_path: Path, feature_points: list[str], scorer_points: list[str]
) -> tuple[set[str], dict[str, dict]]:
    """Both streaming jobs under simulated traffic (80 events/s), each killed (SIGKILL) at
    its fault points in turn and restarted; the feature stream then runs live until it has
    run a batch and stops on SIGTERM; the traffic stops and both jobs drain what is left.
    Returns the delivered event ids and each job's kills (test_crash_under_load.py)."""
    config = write_config(cfg, tmp_path / "crash.yaml")
    ensure_topics(cfg.kafka, [cfg.kafka.topics.events, cfg.kafka.topics.scores], "admin")
    champion(cfg)

    traffic = Traffic(cfg, rate=80)
    traffic.thread.start()
    features_log, scores_log = tmp_path / "features.log", tmp_path / "scores.log"
    cycles: dict[str, dict] = {"stream_features": {}, "stream_scores": {}}
    # The scorer scores feature commits: after its kills the feature stream runs on, live.
    feature_kills = threading.Thread(
        target=kill_cycles,
        args=("stream_features", feature_points, config, features_log),
        kwargs={"out": cycles["stream_features"], "then_live": True},
        daemon=True,
    )
    feature_kills.start()
    try:
        kill_cycles("stream_scores", scorer_points, config, scores_log, cycles["stream_scores"])
        feature_kills.join(900)
        assert not feature_kills.is_alive() and "error" not in cycles["stream_features"], cycles
        assert "error" not in cycles["stream_scores"], cycles["stream_scores"]["error"]
        # Stopped by SIGTERM once it runs batches (before, the signal would find no handler).
        done = cycles["stream_features"]["live_from"]
        wait_for(
            lambda: batches(features_log, "stream_features") > done,
            "the live feature stream runs a batch",
            alive=[(cycles["stream_features"]["live"], features_log)],
        )
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
    produced = traffic.finish()
    # Drain: whatever arrived after the last kill, through both jobs, in large batches.
    drain(cfg, tmp_path, {"stream_features": features_log, "stream_scores": scores_log})
    return produced, cycles
