"""Replay a real event or transaction log (CSV or Parquet) into Kafka, preserving event time.

Give a column mapping, or --preset online-retail for the UCI Online Retail log. Rows the
stream will reject (no user, bad values) are still sent, with a null key when there is no
user, so they are accounted for in the dead-letter path instead of vanishing here.

  python -m jobs.replay --preset online-retail ../shared/data/online-retail
  python -m jobs.replay logs/*.parquet --user-id uid --event-time ts --event-type kind
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

from infra.cli import UsageError, add_config_arguments, run
from infra.config import load_config
from infra.kafka_io import ensure_topics, produce
from sources.replay import ONLINE_RETAIL, ReplayMapping, replay

PRESETS = {"online-retail": ONLINE_RETAIL}
MAPPED = (
    "user_id",
    "event_time",
    "event_type",
    "event_id",
    "amount",
    "quantity",
    "unit_price",
    "product_id",
    "session_id",
    "device",
    "currency",
    "time_format",
    "default_event_type",
    "default_currency",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source",
        nargs="+",
        help="files, a directory or a glob; a preset's directory may hold by-day/",
    )
    add_config_arguments(p)
    p.add_argument("--topic", default=None, help="override the configured events topic")
    p.add_argument("--rate", type=float, default=None, help="events per second (default: max)")
    p.add_argument("--limit", type=int, default=None, help="stop after this many rows")
    add_mapping_args(p)
    return p.parse_args(argv)


def add_mapping_args(p: argparse.ArgumentParser) -> None:
    """--preset and the column-mapping options (jobs.replay and jobs.backfill_features)."""
    p.add_argument("--preset", choices=sorted(PRESETS), help="a known log's column mapping")
    m = p.add_argument_group("column mapping (overrides the preset)")
    for name in MAPPED:
        m.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            metavar="COL"
            if name not in ("time_format", "default_event_type", "default_currency")
            else "VALUE",
        )
    m.add_argument(
        "--refund-prefix",
        nargs=2,
        metavar=("COL", "PREFIX"),
        default=None,
        help="rows whose COL starts with PREFIX are refunds",
    )


def mapping_from_args(args: argparse.Namespace) -> ReplayMapping:
    given = {k: getattr(args, k) for k in MAPPED if getattr(args, k) is not None}
    if args.refund_prefix:
        given["refund_prefix"] = tuple(args.refund_prefix)
    if args.preset:
        return replace(PRESETS[args.preset], **given)
    missing = [k for k in ("user_id", "event_time") if k not in given]
    if missing:
        raise UsageError(
            "without --preset, give at least "
            + " and ".join(f"--{k.replace('_', '-')}" for k in missing)
        )
    return ReplayMapping(**given)


def log_sources(sources: list[str], preset: str | None) -> list[str]:
    """The files to read: a preset's folder may hold its daily files under by-day/."""
    if preset == "online-retail" and len(sources) == 1:
        root = Path(sources[0])
        if (root / "by-day").is_dir():
            return [str(root / "by-day")]
    return sources


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config)
    mapping = mapping_from_args(args)
    sources = log_sources(args.source, args.preset)
    topic = args.topic or cfg.kafka.topics.events
    ensure_topics(cfg.kafka, [topic], "producer")
    records_iter = replay(sources if len(sources) > 1 else sources[0], mapping)

    def records() -> Iterator[tuple[str | None, bytes]]:
        for i, rec in enumerate(records_iter):
            if args.limit is not None and i >= args.limit:
                return
            yield rec.key, json.dumps(rec.value, separators=(",", ":")).encode()

    stats = produce(cfg.kafka, topic, records(), rate=args.rate, label="replay")
    summary = {k: v for k, v in asdict(records_iter.stats).items() if k != "per_file"}
    summary["files"] = len(records_iter.stats.per_file)
    print("replay: " + json.dumps(summary))
    if stats.failed:
        raise SystemExit(f"replay: {stats.failed} records failed delivery: {stats.errors}")


if __name__ == "__main__":
    run(main, "replay")
