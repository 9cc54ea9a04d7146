"""Score the whole ``user_features`` table with one model version (spark-submit entry point).

For backfills and for comparing with the stream: the same scoring code (scoring.score),
every user's current vector in the model's population (plus one ``lapsed`` record for a
user who left it since their latest score), written to ``churn_scores`` (or ``--output``)
once per (model version, user_features version): running it again changes nothing.

  python -m jobs.score_batch                     # the model at scoring.model_alias
  python -m jobs.score_batch --version 3         # a given registered version
  python -m jobs.score_batch --output /tmp/cmp   # another Delta table, e.g. to compare
"""

from __future__ import annotations

import argparse
import sys

from features.registry import FEATURE_NAMES
from infra.cli import add_config_arguments, run
from infra.config import Config, load_config
from infra.kafka_io import ensure_topics, spark_sink_options
from infra.mlflow_io import acting_as
from infra.spark import build_spark
from jobs.stream_scores import model_cache, rules_from
from scoring.model import NoModelError, SignatureMismatch, load_model
from scoring.runner import score_table
from scoring.score import BANDS
from scoring.sink import ScoreSink, scores_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.score_batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument(
        "--version", type=int, help="registered model version (default: the one at the alias)"
    )
    p.add_argument(
        "--features-version", type=int, help="user_features version to read (default: current)"
    )
    p.add_argument("--output", help="Delta table path to write (default: <warehouse>/churn_scores)")
    p.add_argument(
        "--kafka", action="store_true", help="also send the scores to kafka.topics.scores"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config)
    with acting_as(cfg.mlflow, "scorer"):
        _main(args, cfg)


def _main(args: argparse.Namespace, cfg: Config) -> None:
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    cache = model_cache(cfg, log)
    try:
        model = (
            cache.get()
            if args.version is None
            else load_model(cache.registry, cfg.mlflow.model_name, args.version, FEATURE_NAMES)
        )
    except (NoModelError, SignatureMismatch) as exc:
        raise SystemExit(f"score_batch: {exc}") from None
    spark = build_spark(cfg, app_name="score-batch")
    warehouse = cfg.warehouse_location()
    topic = cfg.kafka.topics.scores if args.kafka else None
    if topic:
        ensure_topics(cfg.kafka, [topic], "scorer")
    sink = ScoreSink(
        args.output or scores_path(warehouse), topic, spark_sink_options(cfg.kafka, "scorer")
    )
    try:
        result, _ = score_table(
            spark,
            f"{warehouse.rstrip('/')}/user_features",
            model,
            rules=rules_from(cfg),
            sink=sink,
            version=args.features_version,
        )
        if result.skipped:
            log(
                f"score_batch: {model.label} on user_features v{result.batch_id} is already "
                f"in {sink.path}; nothing to do"
            )
        else:
            bands = ", ".join(f"{b} {result.by_band.get(b, 0):,}" for b in BANDS)
            log(
                f"score_batch: {result.scored:,} users scored with {model.label} on "
                f"user_features v{result.batch_id} ({bands}; {result.explained:,} with reasons), "
                f"{result.lapsed:,} lapsed, {result.outside:,} outside the population "
                f"-> {sink.path}{f' and {topic}' if topic else ''} in {result.seconds:.1f}s"
            )
    finally:
        spark.stop()


if __name__ == "__main__":
    run(main, "score_batch")
