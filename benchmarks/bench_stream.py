"""Benchmark: the stream core end to end, against Kafka's own consumer in the same run.

Four measurements, one after the other, on one scratch warehouse and topic set:

1. sustained: a producer process sends simulator traffic (event times = now) at ``--rate``
   for ``--window-s`` while the real feature stream (jobs.stream_features, default config)
   runs; every second the bench samples the broker's end offsets and the stream's last
   committed offsets. ``sustained_eps`` = events the stream committed during the window
   / window; ``max_lag`` = the largest gap seen. A stream that keeps up shows
   sustained_eps close to the producer's rate and a lag of about one batch;
2. reference: ``kafka-consumer-perf-test`` (Kafka's ConsumerPerformance) reads the same
   topic, nothing else running: ``ratio`` = sustained_eps / its records per second;
3. small batch: the stream restarted with 1,000 records per trigger over a backlog;
   ``small_batch_s`` = the median trigger time (Spark's ``triggerExecution``) after the
   first batch;
4. event to score: the score stream (jobs.stream_scores, its own process, as in
   production) with a stand-in model at the alias; background traffic at half the
   sustained rate; each round sends one event to each of ``--probes`` users who receive
   nothing else, spread over ``--probe-spread-s`` seconds, and times the first score for
   each of them on the scores topic, read from outside like any consumer would.

Needs the local stack (`make up`). Prints progress on stderr and one JSON line; --out
appends it to a file (docs/benchmarks.md).

  python -m benchmarks.bench_stream                       # 5-minute window at 50,000/s
  python -m benchmarks.bench_stream --window-s 30 --rate 20000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.report import report
from infra.config import REPO_ROOT, Config, load_config
from infra.kafka_io import client_config, ensure_topics, produce, producer_config

ROOT = REPO_ROOT


def log(msg: str) -> None:
    print(f"bench stream: {msg}", file=sys.stderr, flush=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def live_traffic(users: int, tag: str) -> Iterator[tuple[str, bytes]]:
    """Simulator events, endlessly, re-timed to the moment they are sent (ids made unique).

    The events are simulated and serialized once, before the first record is sent, with
    markers where the id and the time go; each record is then a splice of bytes and the
    time string is formatted once per millisecond. The producer shares the two cores with
    the stream it loads, so it should cost as little of one as it can: serializing each
    event anew took most of a core at 40,000/s."""
    from sources.simulator import SimulationConfig, simulate

    templates = []
    for e in simulate(SimulationConfig(n_users=users, days=14, seed=7)):
        e["event_id"], e["event_time"] = "@ID@", "@TIME@"
        head, rest = json.dumps(e, separators=(",", ":")).encode().split(b"@ID@")
        middle, tail = rest.split(b"@TIME@")
        templates.append((e["user_id"], head, middle, tail))
    return _retimed(templates, tag.encode())


def _retimed(templates, tag: bytes) -> Iterator[tuple[str, bytes]]:
    n, last_ms, stamp = 0, -1, b""
    while True:
        for user, head, middle, tail in templates:
            ms = time.time_ns() // 1_000_000
            if ms != last_ms:
                moment = datetime.fromtimestamp(ms / 1000, UTC)
                stamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()
                last_ms = ms
            yield user, b"".join((head, tag, b"-%d" % n, middle, stamp, tail))
            n += 1


def _producer_main(overrides: dict[str, str], topic: str, rate: float, count: int, tag: str):
    os.environ.update(overrides)
    import itertools

    cfg = load_config(os.environ.get("BENCH_CONFIG", "local"))
    produce(
        cfg.kafka,
        topic,
        itertools.islice(live_traffic(2000, tag), count),
        rate=rate,
        label=f"bench producer {tag}",
        progress_every_s=30,
    )


def start_producer(overrides, topic: str, rate: float, seconds: float, tag: str):
    proc = mp.get_context("spawn").Process(
        target=_producer_main, args=(overrides, topic, rate, int(rate * seconds), tag)
    )
    proc.start()
    return proc


class Offsets:
    """Broker end offsets of a topic, and the stream's committed offsets, summed."""

    def __init__(self, cfg: Config, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer(client_config(cfg.kafka, "admin") | {"group.id": f"bench-{topic}"})

    def end(self) -> int:
        from confluent_kafka import TopicPartition

        meta = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        return sum(
            self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in meta.partitions
        )

    @staticmethod
    def committed(query) -> int:
        progress = query.lastProgress
        if not progress or not progress["sources"]:
            return 0
        end = progress["sources"][0]["endOffset"]
        end = json.loads(end) if isinstance(end, str) else end
        return sum(int(o) for parts in end.values() for o in parts.values())


def wait_until(cond, timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench stream: {what} did not happen within {timeout_s:.0f}s")
        time.sleep(poll_s)


def consumer_perf(cfg: Config, topic: str, messages: int) -> float:
    """Records/s of Kafka's own ConsumerPerformance over ``messages`` records of ``topic``."""
    from infra.stack import KAFKA_TOOLS, Stack, kafka_java

    stack = Stack.from_config(cfg)
    cmd = kafka_java(
        stack,
        KAFKA_TOOLS["kafka-consumer-perf-test"][0],
        [
            "--bootstrap-server",
            cfg.kafka.bootstrap_servers,
            "--topic",
            topic,
            "--messages",
            str(messages),
            "--timeout",
            "60000",
            "--group",
            f"perf-{uuid.uuid4().hex[:6]}",
        ],
        heap="512m",
    )
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    header, row = [line for line in out.splitlines() if "," in line][-2:]
    values = dict(zip([h.strip() for h in header.split(",")], row.split(","), strict=False))
    return float(values["nMsg.sec"])


def register_stand_in(cfg: Config, names: list[str]) -> None:
    """A small LightGBM model on synthetic vectors at the scorer's alias (cost, not quality)."""
    import lightgbm as lgb
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from infra.mlflow_io import pointed_at
    from scoring.model import LOOKBACK_PARAM

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.integers(0, 20, size=(2000, len(names))).astype(float), columns=names)
    y = (x["days_since_last_event"] > 7).astype(int) ^ (rng.random(len(x)) < 0.2)
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 15},
        lgb.Dataset(x, label=y),
        num_boost_round=100,
    )
    uri, name = cfg.mlflow.tracking_uri, cfg.mlflow.model_name
    with pointed_at(uri):
        mlflow.set_experiment("bench-stream")
        with mlflow.start_run():
            mlflow.log_param(LOOKBACK_PARAM, cfg.training.lookback_days)
            info = mlflow.lightgbm.log_model(
                booster,
                name="model",
                signature=infer_signature(x, booster.predict(x)),
                registered_model_name=name,
            )
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        name, cfg.scoring.model_alias, str(info.registered_model_version)
    )


class ScoreWatcher:
    """Reads the scores topic from its end, like any outside consumer; first arrival per user."""

    def __init__(self, cfg: Config) -> None:
        from confluent_kafka import Consumer

        self.topic = cfg.kafka.topics.scores
        self.consumer = Consumer(
            client_config(cfg.kafka, "admin")
            | {"group.id": f"bench-scores-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "latest"}
        )
        self.arrivals: dict[str, float] = {}
        self.assigned = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=lambda c, p: self.assigned.set())
        while not self.stop.is_set():
            msg = self.consumer.poll(0.05)
            key = None if msg is None or msg.error() else msg.key()
            if key is None:
                continue
            user, at = key.decode(), time.time()
            with self.lock:
                self.arrivals.setdefault(user, at)
        self.consumer.close()

    def forget(self, users: list[str]) -> None:
        with self.lock:
            for u in users:
                self.arrivals.pop(u, None)

    def seen(self, users: list[str]) -> dict[str, float]:
        with self.lock:
            return {u: self.arrivals[u] for u in users if u in self.arrivals}


def probe_rounds(
    cfg: Config, watcher: ScoreWatcher, probes: int, rounds: int, spread_s: float
) -> list[float]:
    """Latencies (s) of one event per probe user per round, to the first score after it.

    A round's events go out evenly over ``spread_s`` seconds: sent at once, they all landed
    in one feature batch and a round was one sample of where that batch stood; spread over
    more than a batch's length they sample every moment of the two jobs' batch cycles."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(cfg.kafka, "producer", **{"linger.ms": 0}))
    users = [f"probe-{i}" for i in range(probes)]
    gap_s = spread_s / probes
    latencies: list[float] = []
    for r in range(rounds + 1):  # round 0 introduces the probe users; it is not counted
        watcher.forget(users)
        sent: dict[str, float] = {}
        start = time.monotonic()
        for i, u in enumerate(users):
            # Pacing the producer, as the traffic generator does (not a wait on a condition).
            time.sleep(max(0.0, start + i * gap_s - time.monotonic()))
            event = {
                "event_id": f"probe-{uuid.uuid4().hex}",
                "user_id": u,
                "event_type": "session_start",
                "event_time": now_iso(),
                "schema_version": 1,
                "properties": {"device": "web", "session_id": f"s-{u}-{r}"},
            }
            producer.produce(
                cfg.kafka.topics.events, key=u.encode(), value=json.dumps(event).encode()
            )
            sent[u] = time.time()
            producer.poll(0)
        producer.flush()
        wait_until(
            lambda: len(watcher.seen(users)) == len(users),
            180,
            f"scores for all {probes} probe users of round {r}",
            poll_s=0.05,
        )
        got = watcher.seen(users)
        round_lat = [got[u] - sent[u] for u in users]
        log(
            f"probe round {r}: p50 {statistics.median(round_lat):.2f}s, max {max(round_lat):.2f}s"
            + (" (warm-up, not counted)" if r == 0 else "")
        )
        if r:
            latencies += round_lat
    return latencies


def delete_topics(cfg: Config, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(cfg.kafka, "admin"))  # kept alive until every future resolves
    for future in admin.delete_topics(topics).values():
        future.result(30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_stream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="local")
    p.add_argument("--rate", type=float, default=50_000, help="producer events/s (default 50000)")
    p.add_argument("--window-s", type=float, default=300, help="sustained window (default 300)")
    p.add_argument("--small-batches", type=int, default=10, help="1,000-record batches timed")
    p.add_argument("--probes", type=int, default=50, help="probe users per latency round")
    p.add_argument("--rounds", type=int, default=3, help="latency rounds counted")
    p.add_argument(
        "--probe-spread-s",
        type=float,
        default=10.0,
        help="seconds over which a round's probe events go out (default 10)",
    )
    p.add_argument(
        "--background-rate",
        type=float,
        default=None,
        help="background events/s while probing (default: half the sustained rate); a fixed "
        "rate compares two latency runs under the same load",
    )
    p.add_argument("--out", type=Path, default=None, help="append the JSON result to this file")
    args = p.parse_args(argv)

    run = uuid.uuid4().hex[:8]
    scratch = ROOT / ".local" / "bench" / f"stream-{run}"
    topics_made: list[str] = []

    def use_scratch(name: str) -> tuple[dict[str, str], Config]:
        """Topics, tables, checkpoints and model of their own; the config that sees them."""
        tag = f"{run}-{name}"
        (scratch / name).mkdir(parents=True)
        overrides = {
            "BENCH_CONFIG": args.config,
            "CHURN__KAFKA__TOPICS__EVENTS": f"bench-events-{tag}",
            "CHURN__KAFKA__TOPICS__DLQ": f"bench-dlq-{tag}",
            "CHURN__KAFKA__TOPICS__SCORES": f"bench-scores-{tag}",
            "CHURN__STORAGE__WAREHOUSE": str(scratch / name / "warehouse"),
            "CHURN__STORAGE__CHECKPOINTS": str(scratch / name / "checkpoints"),
            "CHURN__MLFLOW__MODEL_NAME": f"bench-stream-{tag}",
        }
        os.environ.update(overrides)  # the scorer's process inherits them
        cfg = load_config(args.config)
        topics = cfg.kafka.topics
        ensure_topics(cfg.kafka, [topics.events, topics.dlq, topics.scores], "admin")
        topics_made.extend([topics.events, topics.dlq, topics.scores])
        return overrides, cfg

    overrides, cfg = use_scratch("sustained")
    topic = cfg.kafka.topics.events
    log(f"scratch {scratch}, {cfg.kafka.partitions} partitions per topic")

    from features.registry import FEATURE_NAMES
    from infra.spark import build_spark
    from jobs.stream_features import start_feature_stream

    spark = build_spark(cfg, app_name="bench-stream")
    lines: list[str] = []
    feature_log = (scratch / "stream_features.log").open("a", buffering=1)

    def log_line(line: str) -> None:
        lines.append(line)
        feature_log.write(line + "\n")

    def feature_stream(config: Config, **kw):
        return start_feature_stream(spark, config, log=log_line, **kw)

    def warm_up(config: Config):
        """A running feature stream that has committed a first batch of 20,000 events."""
        t = time.monotonic()
        traffic = _take(live_traffic(2000, f"warm-{config.kafka.topics.events}"), 20_000)
        produce(config.kafka, config.kafka.topics.events, traffic, label="bench warm-up")
        query = feature_stream(config)
        wait_until(lambda: Offsets.committed(query) >= 20_000, 300, "the warm-up batch")
        log(f"stream warm ({time.monotonic() - t:.0f}s)")
        return query

    # 1. sustained: produce for the window while the stream runs; no drain afterwards.
    offsets = Offsets(cfg, topic)
    query = warm_up(cfg)
    log(f"producing {args.rate:,.0f}/s for {args.window_s:.0f}s")
    p0 = Offsets.committed(query)
    producer = start_producer(overrides, topic, args.rate, args.window_s, f"live-{run}")
    start = time.monotonic()
    max_lag, last_print = 0, start
    while time.monotonic() - start < args.window_s:
        time.sleep(1)
        lag = offsets.end() - Offsets.committed(query)
        max_lag = max(max_lag, lag)
        if time.monotonic() - last_print >= 10:
            last_print = time.monotonic()
            done = Offsets.committed(query) - p0
            log(
                f"t={last_print - start:.0f}s committed {done:,} "
                f"({done / (last_print - start):,.0f}/s), lag {lag:,}"
            )
        if query.exception():
            raise RuntimeError(f"feature stream failed: {query.exception()}")
    window = time.monotonic() - start
    sustained = (Offsets.committed(query) - p0) / window
    lag_end = offsets.end() - Offsets.committed(query)
    producer.join()
    produced = offsets.end()
    log(
        f"sustained {sustained:,.0f}/s over {window:.0f}s, max lag {max_lag:,}, "
        f"lag at the end {lag_end:,}"
    )
    query.stop()

    # 2. reference: Kafka's own consumer over the same records, nothing else running.
    perf = consumer_perf(cfg, topic, produced)
    log(f"kafka-consumer-perf-test: {perf:,.0f} records/s over {produced:,} records")

    # 3. small batches: 1,000 records per trigger over a backlog, on a second warm store.
    overrides, cfg = use_scratch("latency")
    topic = cfg.kafka.topics.events
    warm_up(cfg).stop()
    small_cfg = cfg.model_copy(
        update={
            "stream_features": cfg.stream_features.model_copy(
                update={"max_offsets_per_trigger": 1000}
            )
        }
    )
    produce(
        cfg.kafka,
        topic,
        _take(live_traffic(2000, f"small-{run}"), 1000 * (args.small_batches + 1)),
        label="bench backlog",
    )
    query = feature_stream(small_cfg, available_now=True)
    query.awaitTermination()
    times = [
        b["durationMs"]["triggerExecution"] / 1000
        for b in query.recentProgress
        if b["numInputRows"]
    ][1:]
    small_batch_s = statistics.median(times)
    log(
        f"small batches (1,000 records): median {small_batch_s:.2f}s, "
        f"{', '.join(f'{x:.1f}' for x in times)}"
    )
    small_steps = [ln for ln in lines if "1,000 records" in ln][-1:]
    for ln in small_steps:
        log(f"last one: {ln}")

    # 4. event to score: the scorer in its own process, background at half the rate.
    register_stand_in(cfg, list(FEATURE_NAMES))
    query = feature_stream(cfg)
    scorer_log = (scratch / "stream_scores.log").open("w")
    scorer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.stream_scores",
            "--config",
            args.config,
            "--starting-version",
            "latest",
        ],
        cwd=ROOT,
        stdout=scorer_log,
        stderr=subprocess.STDOUT,
    )
    try:
        watcher = ScoreWatcher(cfg)
        wait_until(watcher.assigned.is_set, 60, "the scores consumer's assignment")
        half = args.background_rate or min(sustained, args.rate) / 2
        # Terminated once the probes are done.
        n_probe_s = (30 + args.probe_spread_s) * (args.rounds + 1) + 240
        background = start_producer(overrides, topic, half, n_probe_s, f"bg-{run}")
        log(
            f"background traffic {half:,.0f}/s; {args.rounds} probe rounds of {args.probes}, "
            f"each sent over {args.probe_spread_s:g}s"
        )
        # The scorer starts at "latest", which Delta resolves when its query starts: probes
        # go out once it has scored a batch, so none lands in a commit it skipped.
        wait_until(
            lambda: "stream_scores: batch 0:" in (scratch / "stream_scores.log").read_text(),
            240,
            "the score stream's first batch",
            poll_s=1,
        )
        latencies = probe_rounds(cfg, watcher, args.probes, args.rounds, args.probe_spread_s)
        background.terminate()
        watcher.stop.set()
    finally:
        scorer.terminate()
        scorer.wait(60)
        query.stop()
    score_times = [
        float(m)
        for m in re.findall(
            r"emitted; model .*?; ([\d.]+)s", (scratch / "stream_scores.log").read_text()
        )
    ]

    result: dict[str, Any] = {
        "bench": "stream",
        "sustained_eps": round(sustained),
        "kafka_consumer_perf_eps": round(perf),
        "ratio": round(sustained / perf, 4),
        "window_s": round(window),
        "producer_rate": args.rate,
        "max_lag": max_lag,
        "lag_at_end": lag_end,
        "event_to_score_p50_s": round(percentile(latencies, 0.5), 2),
        "event_to_score_p95_s": round(percentile(latencies, 0.95), 2),
        "probe_spread_s": args.probe_spread_s,
        "background_eps": round(half),
        "small_batch_s": round(small_batch_s, 2),
        "scorer_batch_median_s": round(statistics.median(score_times), 2) if score_times else None,
        "partitions": cfg.kafka.partitions,
        "trigger_s": cfg.stream_features.trigger_s,
        "scorer_trigger_s": cfg.scoring.trigger_s,
    }
    report(result, args.out)
    spark.stop()
    # The logs stay for reading; the tables and the topics' records go.
    for name in ("sustained", "latency"):
        shutil.rmtree(scratch / name, ignore_errors=True)
    delete_topics(cfg, [t for t in topics_made])


def _take(it, n: int):
    import itertools

    return itertools.islice(it, n)


if __name__ == "__main__":
    main()
