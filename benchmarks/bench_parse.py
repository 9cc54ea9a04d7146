"""Benchmark: event validation (features.events.parse_events) as a ratio of a bare from_json.

The reference reads the same records with a typed `from_json` into the contract's columns:
what a pipeline that trusts its input pays. The subject is `parse_events`, which checks
every field's JSON type exactly (a "1" is not a 1) and gives each bad record its reason.
Both run on the same in-memory Kafka-shaped rows (cached first, so neither pays for
reading them), best of --repeat each. No broker needed.

  python -m benchmarks.bench_parse --records 200000
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from benchmarks.report import report
from features.events import parse_events
from infra.config import load_config
from infra.spark import build_spark
from sources.simulator import SimulationConfig, simulate

RAW_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)
# The contract's fields, typed, as a trusting reader would declare them.
CONTRACT_SCHEMA = (
    "event_id string, user_id string, event_type string, event_time timestamp, "
    "schema_version int, properties struct<amount double, currency string, quantity int, "
    "device string, session_id string, product_id string, query string, plan string, "
    "channel string>"
)


def best_of(repeat: int, frame: DataFrame) -> float:
    """Seconds of the fastest full evaluation (the noop sink computes every column)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.monotonic()
        frame.write.format("noop").mode("overwrite").save()
        best = min(best, time.monotonic() - t)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_parse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="local")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3, help="runs of each (best counts)")
    p.add_argument("--out", type=Path, default=None, help="append the JSON result to this file")
    args = p.parse_args(argv)

    cfg = load_config(args.config)
    spark = build_spark(cfg, app_name="bench-parse")
    now = datetime.now(UTC)
    rows = []
    for i, e in enumerate(simulate(SimulationConfig(n_users=2000, days=150))):
        if i >= args.records:
            break
        value = json.dumps(e, separators=(",", ":")).encode()
        rows.append((e["user_id"].encode(), value, "bench", i % 2, i, now))
    raw = spark.createDataFrame(rows, RAW_SCHEMA).repartition(2).cache()
    n = raw.count()

    doc = F.from_json(F.col("value").cast("string"), CONTRACT_SCHEMA)
    reference = raw.select(doc.alias("e")).select("e.*", "e.properties.*").drop("properties")
    ref_s = best_of(args.repeat, reference)
    subject_s = best_of(
        args.repeat, parse_events(raw, max_value_bytes=cfg.stream_features.max_value_bytes)
    )
    result = {
        "bench": "parse",
        "records": n,
        "reference_from_json_rps": round(n / ref_s),
        "parse_events_rps": round(n / subject_s),
        "ratio": round(ref_s / subject_s, 4),
    }
    report(result, args.out)
    spark.stop()


if __name__ == "__main__":
    main()
