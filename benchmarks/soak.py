"""Soak: the streaming pipeline for a long run at half the sustained rate, sampled every 10 s.

The feature stream and the scorer run as in production, each in its own process (a
stand-in model at the scorer's alias, as in the stream benchmark), on topics, tables and
checkpoints of their own, while a producer process sends simulator traffic at ``--rate``
(default: half the sustained rate of the latest `make bench BENCH=stream` result in
.local/bench/results.jsonl, else of the figure in docs/benchmarks.md). Every 10 s it
records:

- the feature stream's lag: records on the events topic not yet in a committed batch
  (from its checkpoint);
- the scorer's lag: `user_features` commits not yet scored (from its checkpoint);
- the memory of each process: both jobs (Python driver, JVM, Python workers), the Kafka
  broker(s) and the MLflow server (proportional set size: forked workers share pages).

At the end it judges the samples after a warm-up (``--warmup-minutes``, default 2: JVMs
grow their heaps and compile while they start): lag bounded (its last third no higher
than its first third's peak plus one batch) and memory flat: each process's last-third
median within 10% plus 64 MiB of its second-third median (the slope is printed too),
except the jobs' JVMs. A JVM grows its heap towards -Xmx and keeps it, so its size says
little about a leak: the first 30-minute soak saw the feature stream's JVM go from 1.8 to
2.2 GiB in its last third while its heap in use did not grow. A job's JVM is judged by the
heap in use after collections (``jvm_heap``: the lowest of each third, from ``jstat -gc``;
10% plus 64 MiB again), and its size only against a ceiling (`spark.driver_memory` plus
1.5 GiB). It writes the samples (CSV) and a plot (PNG) under .local/bench/soak-<run>/, one JSON line
(--out appends it), and exits 1 when lag grew or memory did. A run too short to leave six
samples after the warm-up gets no verdict. The CSV is written as the samples come; Ctrl-C
ends the run early and judges what there is.

Needs the local stack (`make up`); `make soak MINUTES=30`. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from benchmarks.bench_stream import Offsets, delete_topics, register_stand_in, start_producer
from benchmarks.report import report
from infra import stack as local_stack
from infra.config import REPO_ROOT, load_config
from infra.kafka_io import ensure_topics

SAMPLE_S = 10
DOCUMENTED_SUSTAINED = 49_286  # docs/benchmarks.md, "Stream": the five-minute average
JOBS = ("stream_features", "stream_scores")


def log(msg: str) -> None:
    print(f"soak: {msg}", file=sys.stderr, flush=True)


def default_rate(results: Path) -> tuple[float, str]:
    """Half the latest measured sustained rate, and where that came from."""
    if results.exists():
        for line in reversed(results.read_text().splitlines()):
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if row.get("bench") == "stream" and row.get("sustained_eps"):
                    return row[
                        "sustained_eps"
                    ] / 2, f"half of {row['sustained_eps']:,}/s ({results})"
    return DOCUMENTED_SUSTAINED / 2, f"half of {DOCUMENTED_SUSTAINED:,}/s (docs/benchmarks.md)"


def committed_offsets(checkpoint: Path) -> dict[str, Any] | None:
    """The source offsets of a streaming query's newest committed batch (its checkpoint's
    ``commits/<id>`` and ``offsets/<id>``), or None before its first commit."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")]
    if not commits:
        return None
    lines = (checkpoint / "offsets" / str(max(commits))).read_text().splitlines()
    return json.loads(lines[-1])


def feature_lag(end: int, checkpoint: Path) -> int:
    """Records on the events topic (``end``: its end offsets, summed) not yet committed."""
    offsets = committed_offsets(checkpoint)
    done = sum(int(o) for parts in (offsets or {}).values() for o in parts.values())
    return end - done


def table_version(table: Path) -> int:
    """A Delta table's newest version, from its log's file names (-1: no commit yet)."""
    versions = [int(p.stem) for p in (table / "_delta_log").glob("*.json")]
    return max(versions, default=-1)


def scorer_lag(table: Path, checkpoint: Path) -> int:
    """`user_features` commits newer than the last one the scorer's committed batch read."""
    offsets = committed_offsets(checkpoint)
    if offsets is None:
        return max(0, table_version(table))
    return max(0, table_version(table) - int(offsets["reservoirVersion"]))


def pss_mib(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_full_info().pss
    return total / 2**20


def heap_in_use_mib(procs: list[psutil.Process]) -> float:
    """MiB of Java heap in use (survivors, eden and old generation) of these JVMs, by
    ``jstat -gc``; 0 for one that is gone."""
    total = 0.0
    for proc in procs:
        out = subprocess.run(
            ["jstat", "-gc", str(proc.pid)], capture_output=True, text=True, timeout=30
        ).stdout.split()
        if len(out) % 2 == 0 and "OU" in out:
            gc = dict(zip(out[: len(out) // 2], out[len(out) // 2 :], strict=True))
            total += sum(float(gc[k]) for k in ("S0U", "S1U", "EU", "OU")) / 1024
    return total


def job_memory(proc: subprocess.Popen) -> dict[str, float]:
    """MiB of a job's Python driver, its JVM (and the JVM's heap in use), and the JVM's
    Python workers."""
    try:
        driver = psutil.Process(proc.pid)
        children = driver.children(recursive=True)
    except psutil.NoSuchProcess:
        return {"python": 0.0, "jvm": 0.0, "jvm_heap": 0.0, "workers": 0.0}
    jvm: list[psutil.Process] = []
    workers: list[psutil.Process] = []
    for child in children:  # a Python worker may exit between the listing and its name
        with contextlib.suppress(psutil.NoSuchProcess):
            (jvm if child.name() == "java" else workers).append(child)
    return {
        "python": pss_mib([driver]),
        "jvm": pss_mib(jvm),
        "jvm_heap": heap_in_use_mib(jvm),
        "workers": pss_mib(workers),
    }


def grew(col: str, m: dict[str, float], jvm_ceiling_mib: float) -> bool:
    """Whether a memory column grew (the rules in the module's docstring)."""
    if col.endswith(".jvm"):
        return m["peak"] > jvm_ceiling_mib
    if col.endswith(".jvm_heap"):
        return m["last_third_low"] > m["second_third_low"] * 1.1 + 64
    return m["last_third_median"] > m["second_third_median"] * 1.1 + 64


def jvm_size_mib(size: str) -> float:
    """A JVM size (``2g``, ``768m``) in MiB."""
    return float(size[:-1]) * {"m": 1, "g": 1024}[size[-1].lower()]


def slope_mib_per_h(times: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` over ``times`` (s), per hour."""
    if len(times) < 2:
        return 0.0
    return statistics.linear_regression(times, values).slope * 3600


def thirds(values: list[float]) -> tuple[list[float], list[float], list[float]]:
    n = max(1, len(values) // 3)
    return values[:n], values[n : 2 * n], values[2 * n :]


def plot(
    rows: list[dict[str, float]], columns: list[str], path: Path, title: str, warmup_min: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    minutes = [r["t_s"] / 60 for r in rows]
    fig, (lag_ax, mem_ax) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    lag_ax.plot(minutes, [r["feature_lag"] for r in rows], label="feature stream (records)")
    lag_ax.set_ylabel("records behind")
    twin = lag_ax.twinx()
    twin.plot(minutes, [r["scorer_lag"] for r in rows], color="tab:orange", label="scorer")
    twin.set_ylabel("user_features commits behind")
    lag_ax.legend(loc="upper left")
    twin.legend(loc="upper right")
    lag_ax.set_title(title)
    for col in columns:
        style = "--" if col.endswith("_heap") else "-"  # heap in use, not a process's size
        mem_ax.plot(minutes, [r[col] for r in rows], style, label=col)
    mem_ax.set_ylabel("MiB (proportional set size; --: heap in use)")
    mem_ax.set_xlabel("minutes")
    mem_ax.legend(fontsize=7, ncol=3)
    lag_ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    for ax in (lag_ax, mem_ax):  # samples before it are plotted, not judged
        ax.axvline(warmup_min, color="grey", linestyle=":", linewidth=1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="local")
    p.add_argument("--minutes", type=float, default=30, help="how long to run (default 30)")
    p.add_argument("--rate", type=float, default=None, help="events/s (default: see above)")
    p.add_argument(
        "--warmup-minutes", type=float, default=2, help="not judged (default 2; still plotted)"
    )
    p.add_argument("--out", type=Path, default=None, help="append the JSON result to this file")
    args = p.parse_args(argv)
    results = REPO_ROOT / ".local" / "bench" / "results.jsonl"
    rate, why = (args.rate, "--rate") if args.rate else default_rate(results)

    run = uuid.uuid4().hex[:8]
    scratch = REPO_ROOT / ".local" / "bench" / f"soak-{run}"
    scratch.mkdir(parents=True)
    overrides = {
        "BENCH_CONFIG": args.config,
        "CHURN__KAFKA__TOPICS__EVENTS": f"soak-events-{run}",
        "CHURN__KAFKA__TOPICS__DLQ": f"soak-dlq-{run}",
        "CHURN__KAFKA__TOPICS__SCORES": f"soak-scores-{run}",
        "CHURN__STORAGE__WAREHOUSE": str(scratch / "warehouse"),
        "CHURN__STORAGE__CHECKPOINTS": str(scratch / "checkpoints"),
        "CHURN__MLFLOW__MODEL_NAME": f"soak-{run}",
    }
    os.environ.update(overrides)  # the jobs' processes inherit them
    cfg = load_config(args.config)
    topics = cfg.kafka.topics
    ensure_topics(cfg.kafka, [topics.events, topics.dlq, topics.scores], "admin")
    from features.registry import FEATURE_NAMES

    register_stand_in(cfg, list(FEATURE_NAMES))
    stack = local_stack.Stack.from_config(cfg)
    checkpoints = cfg.resolve(cfg.storage.checkpoints)
    features_table = cfg.resolve(cfg.storage.warehouse) / "user_features"
    seconds = args.minutes * 60
    log(f"{args.minutes:g} minutes at {rate:,.0f} events/s ({why}); scratch {scratch}")

    jobs: dict[str, subprocess.Popen] = {}
    for job in JOBS:
        jobs[job] = subprocess.Popen(
            [sys.executable, "-m", f"jobs.{job}", "--config", args.config],
            cwd=REPO_ROOT,
            stdout=(scratch / f"{job}.log").open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    producer = start_producer(overrides, topics.events, rate, seconds, f"soak-{run}")
    offsets = Offsets(cfg, topics.events)
    services = [n.service for n in stack.kafka_nodes()] + ["mlflow"]
    rows: list[dict[str, float]] = []
    samples = (scratch / "soak.csv").open("w", newline="")  # written as it goes
    writer: csv.DictWriter | None = None
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            time.sleep(SAMPLE_S)  # the sampling period, not a wait for a condition
            for job, proc in jobs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{job} exited {proc.returncode}; see {scratch / job}.log")
            row: dict[str, float] = {
                "t_s": round(time.monotonic() - start, 1),
                "produced": offsets.end(),
            }
            row["feature_lag"] = feature_lag(
                int(row["produced"]), checkpoints / cfg.stream_features.checkpoint_name
            )
            row["scorer_lag"] = scorer_lag(
                features_table, checkpoints / cfg.scoring.checkpoint_name
            )
            for job, proc in jobs.items():
                for part, mib in job_memory(proc).items():
                    row[f"{job}.{part}"] = round(mib, 1)
            for service in services:
                row[service] = round(pss_mib(local_stack.members(stack, service)), 1)
            rows.append(row)
            if writer is None:
                writer = csv.DictWriter(samples, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            samples.flush()
            log(
                f"t={row['t_s']:.0f}s produced {row['produced']:,.0f}, feature lag "
                f"{row['feature_lag']:,.0f}, scorer lag {row['scorer_lag']:.0f}; MiB: "
                + ", ".join(f"{k} {v:,.0f}" for k, v in row.items() if "." in k or k in services)
            )
    except KeyboardInterrupt:  # Ctrl-C: judge what there is
        log(f"interrupted after {len(rows)} samples")
    finally:
        samples.close()
        producer.terminate()
        for proc in jobs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in jobs.values():
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()

    if not rows:
        raise SystemExit(f"soak: no sample taken; logs in {scratch}")
    ids = checkpoints / cfg.stream_features.checkpoint_name / "event-ids"
    ids_mib = sum(f.stat().st_size for f in ids.rglob("*") if f.is_file()) / 2**20
    memory_columns = [k for k in rows[0] if "." in k or k in services]
    judged = [r for r in rows if r["t_s"] >= args.warmup_minutes * 60]
    verdict = len(judged) >= 6
    if not verdict:
        judged = rows  # figures over every sample, but no verdict
    times = [r["t_s"] for r in judged]
    lag_first, _, lag_last = thirds([r["feature_lag"] for r in judged])
    batch = cfg.stream_features.max_offsets_per_trigger or 0
    lag_bounded = max(lag_last) <= max(lag_first) + batch
    memory: dict[str, dict[str, float]] = {}
    for col in memory_columns:
        values = [r[col] for r in judged]
        _, middle, last = thirds(values)
        memory[col] = {
            "second_third_median": round(statistics.median(middle or values)),
            "last_third_median": round(statistics.median(last or values)),
            "second_third_low": round(min(middle or values)),
            "last_third_low": round(min(last or values)),
            "peak": round(max(values)),
            "slope_mib_per_h": round(slope_mib_per_h(times, values), 1),
        }
    jvm_ceiling = jvm_size_mib(cfg.spark.driver_memory) + 1536
    growing = [col for col, m in memory.items() if grew(col, m, jvm_ceiling)]
    title = f"soak {args.minutes:g} min at {rate:,.0f}/s ({run})"
    plot(rows, memory_columns, scratch / "soak.png", title, args.warmup_minutes)
    if not verdict:
        log(f"too short to judge: fewer than 6 samples after {args.warmup_minutes:g} min")
    log(
        f"feature lag: max {max(r['feature_lag'] for r in rows):,.0f}; after the warm-up, "
        f"first third's peak {max(lag_first):,.0f}, last third's {max(lag_last):,.0f}"
        + ((": bounded" if lag_bounded else ": GROWING") if verdict else "")
    )
    log(f"scorer lag: max {max(r['scorer_lag'] for r in rows):.0f} commits")
    for col, m in memory.items():
        log(
            f"{col}: median {m['second_third_median']:,} -> {m['last_third_median']:,} MiB, "
            f"low {m['second_third_low']:,} -> {m['last_third_low']:,} (second third -> last), "
            f"peak {m['peak']:,}"
            + (f" (ceiling {jvm_ceiling:,.0f})" if col.endswith(".jvm") else "")
            + f", slope {m['slope_mib_per_h']:+.0f} MiB/h"
        )
    log(f"the feature stream's event-id index: {ids_mib:,.0f} MiB on disk")
    if verdict:
        log("memory: " + (f"GREW: {', '.join(growing)}" if growing else "flat"))
    log(f"samples {scratch / 'soak.csv'}, plot {scratch / 'soak.png'}")
    report(
        {
            "bench": "soak",
            "minutes": args.minutes,
            "rate": round(rate),
            "produced": int(rows[-1]["produced"]),
            "samples": len(rows),
            "feature_lag_max": int(max(r["feature_lag"] for r in rows)),
            "feature_lag_end": int(rows[-1]["feature_lag"]),
            "scorer_lag_max": int(max(r["scorer_lag"] for r in rows)),
            "warmup_minutes": args.warmup_minutes,
            "lag_bounded": lag_bounded if verdict else None,
            "memory_flat": not growing if verdict else None,
            "memory_mib": memory,
            "event_ids_on_disk_mib": round(ids_mib),
            "plot": str(scratch / "soak.png"),
        },
        args.out,
    )
    shutil.rmtree(scratch / "warehouse", ignore_errors=True)
    shutil.rmtree(scratch / "checkpoints", ignore_errors=True)
    delete_topics(cfg, [topics.events, topics.dlq, topics.scores])
    if verdict and not (lag_bounded and not growing):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
