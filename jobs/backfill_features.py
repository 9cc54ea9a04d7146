"""Rebuild the feature store from a bounded source, with the same functions as the stream.

  python -m jobs.backfill_features                       # from the bronze `events` table
  python -m jobs.backfill_features --log ../shared/data/online-retail --preset online-retail
  python -m jobs.backfill_features --warehouse /tmp/wh2  # into another warehouse (to compare)

From a log file the records go through the same parsing and validation as Kafka records
(their Kafka timestamp is the time of the backfill); rejects land in `quarantine`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from features.events import (
    EVENT_COLUMNS,
    apply_time_rules,
    mark_duplicates,
    parse_events,
    rejected_events,
    valid_events,
)
from infra.config import load_config
from infra.spark import build_spark
from store.ingest import rebuild
from store.tables import FeatureStore

RAW_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from jobs.replay import PRESETS

    p = argparse.ArgumentParser(
        prog="python -m jobs.backfill_features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="local", help="conf/<name>.yaml or a path (default: local)")
    p.add_argument(
        "--log", default=None, help="a log file, folder or glob (default: the bronze table)"
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="the log's column mapping"
    )
    p.add_argument(
        "--warehouse", default=None, help="write the tables here instead of storage.warehouse"
    )
    return p.parse_args(argv)


def log_records(
    spark: SparkSession, source: str, preset: str, max_value_bytes: int, max_future_skew_s: int
) -> tuple[DataFrame, DataFrame]:
    """(valid events, rejects) of a log, validated exactly like Kafka records."""
    from pathlib import Path

    from jobs.replay import PRESETS
    from sources.replay import replay

    root = Path(source)
    src = root / "by-day" if preset == "online-retail" and (root / "by-day").is_dir() else root
    now = datetime.now(UTC)
    records = replay(src, PRESETS[preset])
    rows = [
        (
            None if r.key is None else r.key.encode(),
            json.dumps(r.value).encode(),
            f"file:{src}",
            0,
            i,
            now,
        )
        for i, r in enumerate(records)
    ]
    raw = spark.createDataFrame(
        pd.DataFrame(rows, columns=["key", "value", "topic", "partition", "offset", "timestamp"]),
        RAW_SCHEMA,
    )
    parsed = apply_time_rules(
        parse_events(raw, max_value_bytes=max_value_bytes),
        max_skew_after_record_s=max_future_skew_s,
    )
    checked = mark_duplicates(parsed).persist()
    return valid_events(checked), rejected_events(checked)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config)
    spark = build_spark(cfg, app_name="backfill-features")
    source_store = FeatureStore(str(cfg.resolve(cfg.storage.warehouse)))
    target = FeatureStore(args.warehouse or source_store.warehouse)
    t0 = time.monotonic()
    if args.log:
        if not args.preset:
            raise SystemExit("backfill: --log needs --preset (the log's column mapping)")
        events, rejects = log_records(
            spark,
            args.log,
            args.preset,
            cfg.stream_features.max_value_bytes,
            cfg.stream_features.max_future_skew_s,
        )
    else:
        if not source_store.exists(spark, "events"):
            raise SystemExit(
                f"backfill: no bronze table at {source_store.path('events')}; "
                "give --log, or run the stream first"
            )
        # Read it fully before the rebuild overwrites it (same warehouse).
        events = source_store.read(spark, "events").select(*EVENT_COLUMNS).localCheckpoint()
        rejects = None
    print(
        f"backfill: rebuilding the feature store in {target.warehouse}...",
        file=sys.stderr,
        flush=True,
    )
    result = rebuild(spark, target, events, rejects)
    if rejects is not None:
        result["quarantined"] = target.read(spark, "quarantine").count()
    result["seconds"] = round(time.monotonic() - t0, 1)
    print("backfill: " + json.dumps(result, default=str))
    spark.stop()


if __name__ == "__main__":
    main()
