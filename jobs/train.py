"""Train one churn model from the feature store: point-in-time rows, LightGBM, baselines,
an MLflow run, a registered version with alias `challenger`, and the champion gate.

Holds the training lock (state dir), so it never runs alongside another training, and
records the daily table's Delta version on success (what the scheduler compares against).

  python -m jobs.train                              # conf/local.yaml
  python -m jobs.train --config conf/prod.yaml --if-new-data
  python -m infra.submit --master spark://host:7077 --config conf/prod.yaml train

Exit status: 0 trained or skipped (the reason is logged), 1 the training failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infra.cli import add_config_arguments, run
from infra.config import Config, load_config
from infra.mlflow_io import acting_as, unreachable
from infra.spark import build_spark
from training.pipeline import current_table_version, daily_table, train
from training.registry import last_trained_version, tracking
from training.schedule import run_guarded


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument(
        "--if-new-data",
        action="store_true",
        help="skip when the daily table's Delta version is the one the last successful "
        "training used (default: always train)",
    )
    p.add_argument(
        "--summary", type=Path, default=None, help="also write the run's summary as JSON here"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    with acting_as(cfg.mlflow, "trainer"):
        return _main(args, cfg)


def _main(args: argparse.Namespace, cfg: Config) -> int:
    # Before any work, so a server that is down fails the run at once, with nothing
    # logged or registered (decision 55).
    why = unreachable(cfg.mlflow.tracking_uri)
    if why is not None:
        raise SystemExit(
            f"train: the MLflow tracking server at {cfg.mlflow.tracking_uri} does not answer "
            f"({why}); start it (`make up`) or set mlflow.tracking_uri"
        )
    spark = build_spark(cfg, app_name="train")
    _, path = daily_table(cfg)

    def fallback() -> int | None:
        with tracking(cfg.mlflow.tracking_uri) as client:
            return last_trained_version(client, cfg.mlflow.experiment, path)

    try:
        decision = run_guarded(
            cfg.resolve(cfg.training.state_dir),
            current_version=lambda: current_table_version(spark, cfg),
            train=lambda version: train(spark, cfg, table_version=version).summary(),
            last_version_fallback=fallback,
            skip_unchanged=args.if_new_data,
            log=lambda line: print(f"train: {line}", flush=True),
        )
    finally:
        spark.stop()
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        record = {"action": decision.action, "reason": decision.reason, **decision.summary}
        args.summary.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return 1 if decision.action == "failed" else 0


if __name__ == "__main__":
    run(main, "train")
