"""Run churn-model training on a cron schedule (UTC): the embedded scheduler.

At each cron time: measure realised performance (jobs/realised.py; a champion under the
gate's floor trains at once, tagged with it), then check drift (jobs/drift.py; likewise);
then take the training lock (skip if another training holds it), compare the
daily table's Delta version with the one the last successful training used (skip if
unchanged), else train in this process and record the version. Runs never overlap; fire
times missed while a run was busy are logged and not replayed. Every decision is logged
with a UTC timestamp. In production prefer your scheduler (Airflow, cron) calling
jobs/train.py --if-new-data; see docs/training.md.

  python -m jobs.schedule_train                         # training.schedule_cron from config
  python -m jobs.schedule_train --cron "0 3 * * *"      # every day at 03:00 UTC
  python -m jobs.schedule_train --once                  # one check-and-train now, then exit
  python -m jobs.schedule_train --cron "*/10 * * * *" --max-runs 3
"""

from __future__ import annotations

import argparse
from typing import Any

from croniter import croniter
from pyspark.sql import SparkSession

from infra.cli import add_config_arguments, run
from infra.config import Config, load_config
from infra.mlflow_io import acting_as
from infra.spark import build_spark
from jobs import drift, realised
from training.pipeline import current_table_version, daily_table, train
from training.registry import last_trained_version, tracking
from training.result import Trigger
from training.schedule import Decision, run_guarded, run_schedule


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.schedule_train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument(
        "--cron",
        default=None,
        help="cron expression in UTC, 5 fields (or 6 with seconds last); "
        "default: training.schedule_cron",
    )
    p.add_argument("--once", action="store_true", help="check and train once, now, then exit")
    p.add_argument(
        "--max-runs", type=int, default=None, help="exit after this many scheduled checks"
    )
    args = p.parse_args(argv)
    if args.cron is not None and not croniter.is_valid(args.cron):
        p.error(f"--cron {args.cron!r} is not a cron expression")
    if args.max_runs is not None and args.max_runs < 1:
        p.error("--max-runs must be >= 1")
    return args


def log(line: str) -> None:
    print(f"schedule_train: {line}", flush=True)


class Trainer:
    """One tick's work; the SparkSession is built at the first tick and kept for the next."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.spark: SparkSession | None = None

    def session(self) -> SparkSession:
        if self.spark is None:
            self.spark = build_spark(self.cfg, app_name="schedule-train")
        return self.spark

    def _fallback(self) -> int | None:
        with tracking(self.cfg.mlflow.tracking_uri) as client:
            return last_trained_version(
                client, self.cfg.mlflow.experiment, daily_table(self.cfg)[1]
            )

    def _train(self, version: int) -> dict[str, Any]:
        why = Trigger("schedule", f"new data: daily table version {version}")
        return train(self.session(), self.cfg, table_version=version, trigger=why).summary()

    def tick(self) -> Decision:
        m = self.cfg.monitoring
        decision = None
        if m.realised_on_schedule:
            _, decision = realised.check_and_act(self.session(), self.cfg, log=log)
        if decision is None and m.drift_on_schedule:
            _, decision = drift.check_and_act(self.session(), self.cfg, log=log)
        if decision is not None:  # a check asked for a training run: that was the tick
            return decision
        return run_guarded(
            self.cfg.resolve(self.cfg.training.state_dir),
            current_version=lambda: current_table_version(self.session(), self.cfg),
            train=self._train,
            last_version_fallback=self._fallback,
            log=log,
        )

    def stop(self) -> None:
        if self.spark is not None:
            self.spark.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    with acting_as(cfg.mlflow, "trainer"):
        return _main(args, cfg)


def _main(args: argparse.Namespace, cfg: Config) -> int:
    cron = args.cron or cfg.training.schedule_cron
    trainer = Trainer(cfg)
    try:
        if args.once:
            decisions = [trainer.tick()]
        else:
            log(f"schedule {cron!r} (UTC), state in {cfg.resolve(cfg.training.state_dir)}")
            decisions = run_schedule(cron, trainer.tick, max_runs=args.max_runs, log=log)
    except KeyboardInterrupt:
        log("stopped")
        return 0
    finally:
        trainer.stop()
    return 1 if decisions and decisions[-1].action == "failed" else 0


if __name__ == "__main__":
    run(main, "schedule_train")
