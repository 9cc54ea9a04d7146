"""Benchmark: the feature stream on a Spark standalone cluster, one worker against two
(docs/deploy.md, "Scaling").

The same backlog (simulated events in a topic of its own, --partitions partitions) is
drained by ``jobs.stream_features --available-now``, submitted with `make submit`'s
infra.submit to a cluster of one worker and then of two (each
``local_stack.spark_worker_cores`` cores), every run into a fresh warehouse and checkpoint,
micro-batches capped at --batch records. Throughput is records over the micro-batches' own
time (the job's per-batch lines), so the driver's start and the executors' launch are left
out; the first batch (the executors' warm-up) is left out too, and the wall time is reported
beside. The reference is the one-worker run of the same round: ``ratio`` is two workers'
events/s over one's, best of --repeat rounds.

Needs the local stack (`make up`); starts the cluster itself, and stops it at the end (one
that ran before is stopped first).

  python -m benchmarks.bench_cluster --users 2000 --days 60 --out .local/bench/results.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_ingest import send
from benchmarks.report import report
from infra import stack as local_stack
from infra import stack_spark
from infra.config import REPO_ROOT, config_path, load_config
from sources.simulator import SimulationConfig, simulate

BATCH_LINE = re.compile(r"stream_features: batch (\d+): ([\d,]+) records .*; ([\d.]+)s \((.*)\)")


def batch_times(log: str) -> list[tuple[int, int, float]]:
    """(batch id, records, seconds) of each micro-batch line of a feature stream's log."""
    return [(int(m[1]), int(m[2].replace(",", "")), float(m[3])) for m in BATCH_LINE.finditer(log)]


def step_seconds(log: str) -> dict[str, float]:
    """Seconds per step (parse, validate, aggregate, features, write) over the batches after
    the first: which part a second executor could shorten."""
    out: dict[str, float] = {}
    for m in list(BATCH_LINE.finditer(log))[1:]:
        for step in m[4].split():
            name, _, value = step.partition("=")
            out[name] = round(out.get(name, 0.0) + float(value), 1)
    return out


def steady_rate(batches: list[tuple[int, int, float]]) -> float:
    """Records per second of the batches after the first (all of them when only one ran)."""
    steady = batches[1:] or batches
    return sum(r for _, r, _ in steady) / sum(s for _, _, s in steady)


def drain(config: Path, scratch: Path, workers: int, topic: str, batch: int) -> dict[str, Any]:
    """One run of the feature stream over the whole topic on a fresh warehouse."""
    run = scratch / f"w{workers}-{uuid.uuid4().hex[:6]}"
    cfg_file = run / "bench.yaml"
    run.mkdir(parents=True)
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "extends": str(config.resolve()),
                "kafka": {"topics": {"events": topic, "dlq": f"{topic}-dlq"}},
                "storage": {
                    "warehouse": str(run / "warehouse"),
                    "checkpoints": str(run / "checkpoints"),
                },
                "stream_features": {"max_offsets_per_trigger": batch},
            }
        )
    )
    t0 = time.monotonic()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "infra.submit", "--config", str(cfg_file)),
            *("stream_features", "--available-now"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    # spark-submit hands on its Python driver's stderr as its own stdout.
    (run / "stream_features.log").write_text(done.stdout + done.stderr)
    batches = batch_times(done.stdout)
    if done.returncode != 0 or not batches:
        raise SystemExit(
            f"bench cluster: the feature stream failed (exit {done.returncode}, "
            f"{len(batches)} batches):\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
        )
    rate = steady_rate(batches)
    print(
        f"bench cluster: {workers} worker(s): {len(batches)} batches, "
        f"{sum(r for _, r, _ in batches):,} records, {rate:,.0f} events/s after the first "
        f"batch, {wall:.0f}s wall",
        file=sys.stderr,
        flush=True,
    )
    steps = step_seconds(done.stdout)
    print(f"bench cluster: {workers} worker(s): seconds by step {steps}", file=sys.stderr)
    return {"events_s": rate, "wall_s": wall, "batches": len(batches), "steps_s": steps}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="local", help="conf/<name>.yaml or a path")
    p.add_argument("--users", type=int, default=2000, help="simulated users (%(default)s)")
    p.add_argument("--days", type=int, default=60, help="simulated days (%(default)s)")
    p.add_argument("--partitions", type=int, default=4, help="the topic's (%(default)s)")
    p.add_argument("--batch", type=int, default=40_000, help="records per micro-batch")
    p.add_argument("--repeat", type=int, default=1, help="rounds of one then two workers")
    p.add_argument("--out", type=Path, help="append the JSON line to this file")
    args = p.parse_args(argv)

    config = config_path(args.config)
    cfg = load_config(config)
    stack = local_stack.Stack.from_config(cfg)
    events = list(simulate(SimulationConfig(n_users=args.users, days=args.days, seed=11)))
    topic = send(cfg, f"bench-cluster-{uuid.uuid4().hex[:8]}", events, args.partitions)

    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as scratch:
        try:
            for _ in range(args.repeat):
                for workers in (1, 2):
                    stack_spark.cluster_down(stack)
                    stack_spark.cluster_up(dataclasses.replace(stack, spark_workers=workers))
                    runs[workers].append(drain(config, Path(scratch), workers, topic, args.batch))
        finally:
            stack_spark.cluster_down(stack)
    one = max(r["events_s"] for r in runs[1])
    two = max(r["events_s"] for r in runs[2])
    report(
        {
            "bench": "cluster",
            "events": len(events),
            "partitions": args.partitions,
            "batch": args.batch,
            "worker_cores": stack.spark_worker_cores,
            "one_worker_events_s": round(one),
            "two_workers_events_s": round(two),
            "ratio": round(two / one, 3),
            "wall_s": {w: [round(r["wall_s"]) for r in rs] for w, rs in runs.items()},
            "batches": {w: [r["batches"] for r in rs] for w, rs in runs.items()},
            "steps_s": {w: [r["steps_s"] for r in rs] for w, rs in runs.items()},
        },
        args.out,
    )


if __name__ == "__main__":
    main()
