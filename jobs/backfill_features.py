"""Rebuild the feature store from a bounded source, with the same functions as the stream.

  python -m jobs.backfill_features                       # from the bronze `events` table
  python -m jobs.backfill_features --log ../shared/data/online-retail --preset online-retail
  python -m jobs.backfill_features --log 'logs/*.parquet' --user-id uid --event-time ts
  python -m jobs.backfill_features --warehouse /tmp/wh2  # into another warehouse (to compare)

From bronze, the derived tables are rebuilt at once and bronze keeps its rows and their
`ingest_batch_id` (copied as they are into another warehouse). From a log, the tables are
emptied and the log goes through the stream's own batches (store/backfill.py): read in
Spark with the replay's column mapping, validated, deduplicated and judged late exactly as
Kafka records are (their Kafka timestamp is the time of the backfill); rejects land in
`quarantine`; the batches are numbered -K..-1 (docs/decisions.md, decision 36).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from infra.cli import UsageError, add_config_arguments, run
from infra.config import load_config
from infra.spark import build_spark
from jobs.replay import MAPPED, add_mapping_args, log_sources, mapping_from_args
from jobs.stream_features import ingest_rules
from store.backfill import backfill_log, log_records
from store.ingest import rebuild
from store.tables import FeatureStore


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.backfill_features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument(
        "--log",
        action="append",
        default=None,
        metavar="PATH",
        help="a log file, folder or glob; repeat for more (default: the bronze table)",
    )
    p.add_argument(
        "--batch-records",
        type=int,
        default=None,
        metavar="N",
        help="records per batch of a log (default: stream_features.max_offsets_per_trigger)",
    )
    p.add_argument(
        "--warehouse", default=None, help="write the tables here instead of storage.warehouse"
    )
    add_mapping_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config)
    sf = cfg.stream_features
    if not args.log and (args.preset or any(getattr(args, k) for k in MAPPED)):
        raise UsageError("--preset and the column options describe a --log; give one")
    if args.batch_records is not None and args.batch_records < 1:
        raise UsageError(f"--batch-records must be at least 1, not {args.batch_records}")
    mapping = mapping_from_args(args) if args.log else None
    spark = build_spark(cfg, app_name="backfill-features")
    source_store = FeatureStore(cfg.warehouse_location())
    target = FeatureStore(args.warehouse or source_store.warehouse)
    t0 = time.monotonic()
    if mapping is not None:
        rules = ingest_rules(cfg)
        sources = log_sources(args.log, args.preset)
        batch_records = args.batch_records or sf.max_offsets_per_trigger or 400_000
        print(
            f"backfill: {', '.join(sources)} -> {target.warehouse}, "
            f"batches of {batch_records:,} records",
            file=sys.stderr,
            flush=True,
        )
        try:
            raw = log_records(spark, sources, mapping)
        except (FileNotFoundError, ValueError) as exc:
            spark.stop()
            raise UsageError(str(exc)) from None
        results = backfill_log(
            spark,
            target,
            raw,
            rules,
            batch_records=batch_records,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        summary: dict[str, object] = {
            "batches": len(results),
            "records": sum(r.records for r in results),
            "valid": sum(r.valid for r in results),
            "quarantined": sum(r.quarantined for r in results),
            "as_of": results[-1].as_of,
            "users": target.read(spark, "user_features").count(),
        }
    else:
        if not source_store.exists(spark, "events"):
            raise SystemExit(
                f"backfill: no bronze table at {source_store.path('events')}; "
                "give --log, or run the stream first"
            )
        print(
            f"backfill: rebuilding the feature store in {target.warehouse} from bronze...",
            file=sys.stderr,
            flush=True,
        )
        same = target.warehouse == source_store.warehouse
        events = source_store.read(spark, "events")
        summary = rebuild(spark, target, events, write_events=not same)
    summary["seconds"] = round(time.monotonic() - t0, 1)
    print("backfill: " + json.dumps(summary, default=str))
    spark.stop()


if __name__ == "__main__":
    run(main, "backfill")
