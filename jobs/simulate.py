"""Simulate a user population with a hidden churn process and produce its events to Kafka.

Events go to the configured events topic (key = user_id, JSON value, contract v1) in
event-time order, as fast as possible or at --rate events/s. Reproducible by --seed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from infra.cli import add_config_arguments, run
from infra.config import load_config
from infra.kafka_io import ensure_topics, produce
from sources.simulator import SimulationConfig, ground_truth, simulate


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = SimulationConfig()
    p = argparse.ArgumentParser(prog="python -m jobs.simulate", description=__doc__)
    add_config_arguments(p)
    p.add_argument(
        "--users", type=int, default=d.n_users, help="users at day 0 (default: %(default)s)"
    )
    p.add_argument("--days", type=int, default=d.days, help="days simulated (default: %(default)s)")
    p.add_argument(
        "--start",
        type=date.fromisoformat,
        default=d.start,
        help="first simulated day, YYYY-MM-DD (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    p.add_argument(
        "--rate", type=float, default=None, help="events per second (default: as fast as possible)"
    )
    p.add_argument("--topic", default=None, help="override the configured events topic")
    p.add_argument(
        "--ground-truth",
        type=Path,
        default=None,
        help="also write each user's sign-up and hidden churn date to this CSV",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config)
    sim = SimulationConfig(n_users=args.users, days=args.days, start=args.start, seed=args.seed)
    topic = args.topic or cfg.kafka.topics.events
    ensure_topics(cfg.kafka, [topic], "producer")
    if args.ground_truth:
        args.ground_truth.parent.mkdir(parents=True, exist_ok=True)
        ground_truth(sim).to_csv(args.ground_truth, index=False)

    def records() -> Iterator[tuple[str | None, bytes]]:
        for event in simulate(sim):
            yield event["user_id"], json.dumps(event, separators=(",", ":")).encode()

    stats = produce(cfg.kafka, topic, records(), rate=args.rate, label="simulate")
    if stats.failed:
        raise SystemExit(f"simulate: {stats.failed} records failed delivery: {stats.errors}")


if __name__ == "__main__":
    run(main, "simulate")
