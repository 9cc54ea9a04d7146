"""Benchmark: feature-store ingest throughput as a ratio of raw Kafka throughput, same run.

Shared machines are noisy, so absolute numbers mean little; the ratio to a reference
measured moments before on the same data does. Both read the same topic with the same
Spark Kafka connector:

- reference: Spark reads the micro-batch's records from Kafka and counts them (bytes off the
  broker, nothing else), best of --repeat;
- subject:   store.ingest.process_batch on the same records (parse, validate, dedup, bronze,
  daily partials added to the hot state and appended, features, bookkeeping) into a
  scratch warehouse.

With ``--span`` the subject runs twice on the same events, each into its own warehouse:
as simulated (a replay whose micro-batches span months of event time) and re-timed into
the simulation's last day, order kept (live traffic: a batch spans minutes). ``span_ratio``
= the replay's events/s over live's, best of --repeat each, alternating; and the most
files one commit added to bronze in each. Target: a replay no slower per event than live
traffic, without a file per event date.

Needs the local stack (`make up`). Prints one JSON line; --out appends it to a file.

  python -m benchmarks.bench_ingest --users 2000 --days 30 --batch 100000
  python -m benchmarks.bench_ingest --span --users 400 --days 730 --batch 400000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from benchmarks.report import report
from infra.config import Config, load_config
from infra.kafka_io import ensure_topics, produce, spark_options
from infra.spark import build_spark
from sources.simulator import SimulationConfig, simulate
from store.ingest import IngestRules, process_batch
from store.tables import FeatureStore


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="local")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--batch", type=int, default=100_000, help="records per micro-batch")
    p.add_argument("--repeat", type=int, default=3, help="runs of the reference (best counts)")
    p.add_argument(
        "--span",
        action="store_true",
        help="also ingest the events re-timed into one day, and compare (see above)",
    )
    p.add_argument("--out", type=Path, default=None, help="append the JSON result to this file")
    args = p.parse_args(argv)

    cfg = load_config(args.config)
    run = uuid.uuid4().hex[:8]
    events = list(simulate(SimulationConfig(n_users=args.users, days=args.days)))
    topic = send(cfg, f"bench-ingest-{run}", events)
    live_topic = send(cfg, f"bench-ingest-{run}-live", one_day(events)) if args.span else None
    spark = build_spark(cfg, app_name="bench-ingest")

    def kafka_slice(topic: str, start: int, end: int):
        offsets, ends = {topic: {"0": start}}, {topic: {"0": end}}
        return (
            spark.read.format("kafka")
            .options(**spark_options(cfg.kafka, "features"))
            .option("subscribe", topic)
            .option("startingOffsets", json.dumps(offsets))
            .option("endingOffsets", json.dumps(ends))
            .load()
        )

    total = len(events)
    bounds = [(s, min(s + args.batch, total)) for s in range(0, total, args.batch)]

    best_ref = float("inf")
    for _ in range(args.repeat):
        t = time.monotonic()
        n = sum(kafka_slice(topic, s, e).select(F.length("value")).count() for s, e in bounds)
        best_ref = min(best_ref, time.monotonic() - t)
    assert n == total, (n, total)

    rules = IngestRules(max_value_bytes=cfg.stream_features.max_value_bytes)

    def ingest(topic: str) -> tuple[float, dict[str, float], int]:
        """Seconds, seconds per step, and the most files one bronze commit added."""
        with tempfile.TemporaryDirectory() as tmp:
            store = FeatureStore(tmp)
            t = time.monotonic()
            steps: dict[str, float] = {}
            for i, (s, e) in enumerate(bounds):
                r = process_batch(spark, store, kafka_slice(topic, s, e), i, rules, "bench")
                for k, v in r.step_seconds.items():
                    steps[k] = steps.get(k, 0.0) + v
            seconds = time.monotonic() - t
            return seconds, steps, most_files(spark, store.path("events"))

    subject, steps, files = ingest(topic)
    result: dict[str, Any] = {
        "bench": "ingest",
        "records": total,
        "batches": len(bounds),
        "batch_size": args.batch,
        "reference_kafka_read_rps": round(total / best_ref),
        "ingest_rps": round(total / subject),
        "ratio": round(best_ref / subject, 4),
        "ingest_step_seconds": {k: round(v, 1) for k, v in steps.items()},
    }
    if live_topic:
        # Alternating (replay, live, replay, ...): both see the same warm-up of the JVM.
        span_s, live_s, live_files = [subject], [], 0
        for k in range(args.repeat):
            seconds, _, live_files = ingest(live_topic)
            live_s.append(seconds)
            if k < args.repeat - 1:
                span_s.append(ingest(topic)[0])
        result |= {
            "span_days": args.days,
            "span_rps": round(total / min(span_s)),
            "one_day_rps": round(total / min(live_s)),
            "span_ratio": round(min(live_s) / min(span_s), 4),
            "runs_s": {
                "span": [round(x, 1) for x in span_s],
                "one_day": [round(x, 1) for x in live_s],
            },
            "bronze_files_per_commit": {"span": files, "one_day": live_files},
        }
    report(result, args.out)
    spark.stop()


def send(cfg: Config, topic: str, events: Iterable[dict[str, Any]], partitions: int = 1) -> str:
    """The events to a new topic, of one partition by default (batches are then exact
    offset ranges)."""
    ensure_topics(cfg.kafka.model_copy(update={"partitions": partitions}), [topic], "admin")
    records = ((e["user_id"], json.dumps(e, separators=(",", ":")).encode()) for e in events)
    produce(cfg.kafka, topic, records, label=f"bench {topic}")
    return topic


def one_day(events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The events with their times moved linearly into the 24 hours before the last one,
    order kept: live traffic's timeline, the same users, ids and payloads."""
    moments = [_instant(e["event_time"]) for e in events]
    first, last = min(moments), max(moments)
    scale = 86_399.0 / max(last - first, 1.0)
    for e, at in zip(events, moments, strict=True):
        moved = datetime.fromtimestamp(last - (last - at) * scale, UTC)
        yield {**e, "event_time": moved.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def most_files(spark: SparkSession, path: str) -> int:
    """The most data files one commit of the table at ``path`` added."""
    rows = DeltaTable.forPath(spark, path).history().select("operationMetrics").collect()
    return max(int((r["operationMetrics"] or {}).get("numFiles", 0)) for r in rows)


if __name__ == "__main__":
    main()
