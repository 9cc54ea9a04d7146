"""Benchmark: feature-store ingest throughput as a ratio of raw Kafka throughput, same run.

Shared machines are noisy, so absolute numbers mean little; the ratio to a reference
measured moments before on the same data does. Both read the same topic with the same
Spark Kafka connector:

- reference: Spark reads the micro-batch's records from Kafka and counts them (bytes off the
  broker, nothing else), best of --repeat;
- subject:   store.ingest.process_batch on the same records (parse, validate, dedup, bronze,
  daily partials added to the hot state and appended, features, bookkeeping) into a
  scratch warehouse.

Needs the local stack (`make up`). Prints one JSON line; --out appends it to a file.

  python -m benchmarks.bench_ingest --users 2000 --days 30 --batch 100000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from pyspark.sql import functions as F

from benchmarks.report import report
from infra.config import load_config
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
    p.add_argument("--out", type=Path, default=None, help="append the JSON result to this file")
    args = p.parse_args(argv)

    cfg = load_config(args.config)
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    # One partition: batches are exact offset ranges [start, end).
    ensure_topics(cfg.kafka.model_copy(update={"partitions": 1}), [topic])
    events = (
        (e["user_id"], json.dumps(e, separators=(",", ":")).encode())
        for e in simulate(SimulationConfig(n_users=args.users, days=args.days))
    )
    sent = produce(cfg.kafka, topic, events, label="bench")
    spark = build_spark(cfg, app_name="bench-ingest")

    def kafka_slice(start: int, end: int):
        offsets, ends = {topic: {"0": start}}, {topic: {"0": end}}
        return (
            spark.read.format("kafka")
            .options(**spark_options(cfg.kafka))
            .option("subscribe", topic)
            .option("startingOffsets", json.dumps(offsets))
            .option("endingOffsets", json.dumps(ends))
            .load()
        )

    total = sent.produced
    bounds = [(s, min(s + args.batch, total)) for s in range(0, total, args.batch)]

    best_ref = float("inf")
    for _ in range(args.repeat):
        t = time.monotonic()
        n = sum(kafka_slice(s, e).select(F.length("value")).count() for s, e in bounds)
        best_ref = min(best_ref, time.monotonic() - t)
    assert n == total, (n, total)

    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(tmp)
        rules = IngestRules(max_value_bytes=cfg.stream_features.max_value_bytes)
        t = time.monotonic()
        steps: dict[str, float] = {}
        for i, (s, e) in enumerate(bounds):
            r = process_batch(spark, store, kafka_slice(s, e), i, rules, "bench")
            for k, v in r.step_seconds.items():
                steps[k] = steps.get(k, 0.0) + v
        subject = time.monotonic() - t

    result = {
        "bench": "ingest",
        "records": total,
        "batches": len(bounds),
        "batch_size": args.batch,
        "reference_kafka_read_rps": round(total / best_ref),
        "ingest_rps": round(total / subject),
        "ratio": round(best_ref / subject, 4),
        "ingest_step_seconds": {k: round(v, 1) for k, v in steps.items()},
    }
    report(result, args.out)
    spark.stop()


if __name__ == "__main__":
    main()
