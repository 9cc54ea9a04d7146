"""The whole pipeline, end to end, on the embedded local stack (`make demo`).

1. reset the demo's topics, tables and checkpoints (MLflow runs and models are kept, so a
   second demo shows the champion/challenger gate at work);
2. simulate users with a hidden churn process and produce their first ``--days`` of
   events to Kafka;
3. stream them into the feature store (jobs.stream_features, until the topic is drained);
4. train LightGBM on point-in-time training sets, log and register it in MLflow, gate it;
5. score every user with the champion (jobs.stream_scores, until every update is scored);
6. live on: ``--live-days`` more days of the same users, a ``--live-step`` at a time, each
   produced, streamed and scored by both streams running (serving /metrics meanwhile, so
   ``python -m jobs.status`` shows them), so that the scores have a history;
7. measure the realised performance of the scoring days whose horizon has passed
   (jobs.realised, report only);
8. print a summary and write it as JSON (default .local/demo/summary.json).

The stack stays up afterwards for exploring (MLflow UI, notebooks); `make down` stops it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from infra.cli import add_config_arguments, run
from infra.config import Config, load_config
from infra.kafka_io import EndOffsets, client_config, ensure_topics, produce
from infra.metrics import FeatureMetrics, ScoreMetrics, delta_lag, serve, stop
from infra.mlflow_io import acting_as
from infra.spark import build_spark
from jobs.realised import RealisedReport, check_and_act
from store.tables import FeatureStore, latest_per_user, newest_version_from

SUMMARY_PATH = Path(".local/demo/summary.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument("--users", type=int, default=2000, help="simulated users (default: %(default)s)")
    p.add_argument(
        "--days",
        type=int,
        default=150,
        help="simulated days before training (default: %(default)s)",
    )
    p.add_argument(
        "--live-days",
        type=int,
        default=42,
        help="simulated days after training, scored as they come; the first ones whose "
        "horizon passes get their realised performance (default: %(default)s)",
    )
    p.add_argument(
        "--live-step",
        type=int,
        default=7,
        help="days streamed and scored at a time after training (default: %(default)s)",
    )
    p.add_argument("--big", action="store_true", help="a bigger run: 10,000 users over 180 days")
    p.add_argument(
        "--bad-every",
        type=int,
        default=1000,
        help="also send one malformed record per this many events, to show the "
        "dead-letter path (0: none; default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=7, help="simulation seed (default: %(default)s)")
    p.add_argument(
        "--summary",
        type=Path,
        default=SUMMARY_PATH,
        help="where to write the JSON summary (default: %(default)s)",
    )
    args = p.parse_args(argv)
    if args.live_days < 0 or args.live_step < 1:
        p.error("--live-days must be >= 0 and --live-step >= 1")
    return args


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def reset(cfg: Config) -> list[str]:
    """Delete the demo's topics, and its local tables, checkpoints and id index, so every
    demo starts the same way; returns the locations on object storage, which
    ``reset_remote`` deletes once Spark runs."""
    from confluent_kafka.admin import AdminClient

    topics = [cfg.kafka.topics.events, cfg.kafka.topics.dlq, cfg.kafka.topics.scores]
    admin = AdminClient(client_config(cfg.kafka, "admin"))
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [t for t in topics if t in existing]
    for future in admin.delete_topics(doomed, operation_timeout=30).values() if doomed else []:
        future.result()
    deadline = time.monotonic() + 60
    while set(admin.list_topics(timeout=30).topics) & set(doomed) and time.monotonic() < deadline:
        time.sleep(0.5)
    remote = []
    ids = cfg.stream_features.id_index_dir
    for path in (cfg.storage.warehouse, cfg.storage.checkpoints, *([str(ids)] if ids else [])):
        local = cfg.local_dir(path)
        if local is None:
            remote.append(cfg.location(path))
        elif local.exists():
            shutil.rmtree(local)
    ensure_topics(cfg.kafka, topics, "admin")
    say(f"reset topics {', '.join(topics)}, {cfg.storage.warehouse} and {cfg.storage.checkpoints}")
    return remote


def reset_remote(spark: SparkSession, locations: list[str]) -> None:
    """Delete the demo's tables and checkpoints on object storage, through Hadoop's
    FileSystem (the one the jobs write with)."""
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    for location in locations:
        path = jvm.org.apache.hadoop.fs.Path(location)  # type: ignore[union-attr]
        path.getFileSystem(hadoop_conf).delete(path, True)


# Malformed records the demo mixes in: each lands in the quarantine with this reason.
BAD_RECORDS: tuple[tuple[bytes | None, bytes], ...] = (
    (b"u-bad", b"{not json"),
    (
        b"u-bad",
        b'{"event_id": "x", "user_id": "u-bad", "event_type": "teleport", '
        b'"event_time": "2024-01-01T00:00:00Z", "schema_version": 1}',
    ),
    (None, b'{"event_id": "y", "event_type": "page_view"}'),
)


class Simulation:
    """The simulated users' events, produced to Kafka a span of days at a time."""

    def __init__(self, cfg: Config, users: int, days: int, seed: int, bad_every: int) -> None:
        from sources.simulator import SimulationConfig, simulate

        self.cfg = cfg
        self.sim = SimulationConfig(n_users=users, days=days, seed=seed)
        say(f"simulating {users:,} users over {days} days from {self.sim.start} (seed {seed})")
        self.records = self._records(simulate(self.sim), bad_every)
        self.head: tuple[str, str | None, bytes] | None = next(self.records, None)

    @staticmethod
    def _records(
        events: Iterator[dict[str, Any]], bad_every: int
    ) -> Iterator[tuple[str, str | None, bytes]]:
        """(event day, key, value) in event-time order, a malformed record now and then."""
        for n, event in enumerate(events, start=1):
            day = event["event_time"][:10]
            yield day, event["user_id"], json.dumps(event, separators=(",", ":")).encode()
            if bad_every and n % bad_every == 0:
                key, value = BAD_RECORDS[(n // bad_every) % len(BAD_RECORDS)]
                yield day, (None if key is None else key.decode()), value

    def produce(self, days: int) -> int:
        """Produce the events before the simulation's day ``days`` not sent yet; their count."""
        end = str(self.sim.start + timedelta(days=days))

        def before() -> Iterator[tuple[str | None, bytes]]:
            while self.head is not None and self.head[0] < end:
                yield self.head[1], self.head[2]
                self.head = next(self.records, None)

        stats = produce(
            self.cfg.kafka, self.cfg.kafka.topics.events, before(), label="demo: simulate"
        )
        if stats.failed:
            raise SystemExit(f"demo: {stats.failed} events failed delivery: {stats.errors}")
        return stats.produced


def run_feature_stream(spark: SparkSession, cfg: Config) -> None:
    from jobs.stream_features import start_feature_stream

    say("streaming events into the feature store (one line per micro-batch)")
    query = start_feature_stream(spark, cfg, available_now=True, log=say)
    query.awaitTermination()
    if query.exception():
        raise SystemExit(f"demo: the feature stream failed: {query.exception()}")


def run_scorer(spark: SparkSession, cfg: Config) -> None:
    from jobs.stream_scores import start_score_stream

    say("scoring every user with the champion (one line per micro-batch)")
    with acting_as(cfg.mlflow, "scorer"):
        query = start_score_stream(spark, cfg, available_now=True, log=say)
        query.awaitTermination()
    if query.exception():
        raise SystemExit(f"demo: the scorer failed: {query.exception()}")


def live_on(
    spark: SparkSession, cfg: Config, sim: Simulation, days: int, live_days: int, step: int
) -> int:
    """Both streams running while the simulation goes on ``step`` days at a time: each step
    is produced, then waited on until it is streamed and its feature updates scored, so
    that every step leaves scores as of its last day. Returns the events produced."""
    from jobs.stream_features import start_feature_stream
    from jobs.stream_scores import start_score_stream

    def quiet(_line: str) -> None:  # the line per step says what happened
        pass

    features_path = FeatureStore(cfg.warehouse_location()).path("user_features")
    topic, ends = cfg.kafka.topics.events, EndOffsets(cfg.kafka, "features")
    produced, day, started = 0, days, time.monotonic()
    m = cfg.monitoring
    # Served as the jobs serve them: `python -m jobs.status` shows both streams meanwhile.
    feature_metrics = serve(FeatureMetrics(), m.metrics_host, m.metrics_port.stream_features)
    score_metrics = serve(ScoreMetrics(), m.metrics_host, m.metrics_port.stream_scores)
    with acting_as(cfg.mlflow, "scorer"):
        features = start_feature_stream(spark, cfg, log=quiet, metrics=feature_metrics)
        scores = start_score_stream(spark, cfg, log=quiet, metrics=score_metrics)
        queries = [features, scores]

        def scored() -> bool:
            newest = partial(newest_version_from, spark, features_path)
            return delta_lag(scores.lastProgress, newest) == 0

        try:
            while day < days + live_days:
                day = min(day + step, days + live_days)
                produced += sim.produce(day)
                end = {str(p): o for p, o in ends(topic).items()}
                streamed = partial(kafka_read_to, features, topic, end)
                wait_on(queries, streamed, f"the feature stream to read day {day}")
                wait_on(queries, scored, f"the scorer to score day {day}'s features")
                say(
                    f"lived on to day {day} of the simulation: streamed and scored "
                    f"({time.monotonic() - started:.0f}s in)"
                )
        finally:
            for query in queries:
                query.stop()
            stop(feature_metrics)
            stop(score_metrics)
    return produced


def kafka_read_to(query: StreamingQuery, topic: str, end: dict[str, int]) -> bool:
    """True once ``query``'s last batch read ``topic`` up to ``end`` (partition -> offset)."""
    progress: dict[str, Any] = query.lastProgress or {}
    sources = progress.get("sources") or [{}]
    offset = sources[0].get("endOffset") or "{}"
    read: dict[str, Any] = json.loads(offset) if isinstance(offset, str) else offset
    return bool(end) and read.get(topic) == end


def wait_on(
    queries: list[StreamingQuery], condition: Callable[[], bool], what: str, timeout_s: float = 600
) -> None:
    """Poll ``condition`` until it holds; fail when a query dies or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for query in queries:
            if query.exception() is not None or not query.isActive:
                raise SystemExit(
                    f"demo: a stream stopped while waiting for {what}: {query.exception()}"
                )
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: gave up waiting {timeout_s:.0f}s for {what}")
        time.sleep(0.2)


def summarize(
    spark: SparkSession,
    cfg: Config,
    produced: int,
    training: dict[str, Any],
    seconds: dict[str, float],
    realised: RealisedReport | None,
) -> dict[str, Any]:
    store = FeatureStore(cfg.warehouse_location())
    batches = (
        store.read(spark, "feature_batches")
        .agg(
            F.sum("records").alias("records"),
            F.sum("valid").alias("valid"),
            F.sum("quarantined").alias("quarantined"),
        )
        .collect()[0]
    )
    reasons = {
        r["reason"]: r["n"]
        for r in store.read(spark, "feature_batches")
        .select(F.explode("reasons").alias("reason", "count"))
        .groupBy("reason")
        .agg(F.sum("count").alias("n"))
        .collect()
    }
    from scoring.latest import latest as latest_records
    from scoring.sink import scores_path

    scores = spark.read.format("delta").load(scores_path(store.warehouse))
    latest = latest_records(scores)
    # The champion's population, counted from the features (scoring.score.in_population).
    in_population = (
        latest_per_user(store.read(spark, "user_features"))
        .where(F.col("days_since_last_event") <= cfg.training.lookback_days)
        .count()
    )
    by_status = {
        r["status"]: r["n"]
        for r in latest.groupBy("status").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    bands = {
        r["risk_band"]: r["n"]
        for r in latest.where(F.col("status") == "scored")
        .groupBy("risk_band")
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    }
    versions = sorted(
        {
            f"{r['model_name']}/{r['model_version']}"
            for r in scores.select("model_name", "model_version").distinct().collect()
        }
    )
    ui = cfg.mlflow.tracking_uri
    return {
        "events": {
            "produced": produced,
            "processed": batches["records"],
            "valid": batches["valid"],
            "quarantined": batches["quarantined"],
            "quarantined_by_reason": reasons,
        },
        "users": store.read(spark, "user_lifetime").count(),
        "feature_rows": store.read(spark, "user_features").count(),
        "daily_rows": store.read(spark, "user_activity_daily").count(),
        "training": training,
        "scores": {
            "rows": scores.count(),
            "users_scored": by_status.get("scored", 0),
            "users_lapsed": by_status.get("lapsed", 0),
            "users_in_population": in_population,
            "lookback_days": cfg.training.lookback_days,
            "latest_by_band": bands,
            "model_versions": versions,
        },
        "realised": {
            "rows": []
            if realised is None
            else [
                {
                    "features_as_of": str(r.features_as_of),
                    "model": f"{r.model_name}/{r.model_version}",
                    "users": int(r.users),
                    "churn_rate": round(float(r.churn_rate), 4),
                    "roc_auc": round(float(r.roc_auc), 4),
                    "lift_top_decile": round(float(r.lift_top_decile), 2),
                }
                for r in realised.table.itertuples()
            ],
            "breach": "" if realised is None else realised.breach,
            "run_id": "" if realised is None else realised.run_id,
        },
        "where": {
            "mlflow_ui": ui,
            "experiment": f"{ui}/#/experiments/{training['experiment_id']}",
            # MLflow 3.17's UI keeps a GenAI / model-training toggle in the browser (GenAI by
            # default, whatever the experiment's kind tag); this address sets it (decision 66).
            "runs": f"{ui}/#/experiments/{training['experiment_id']}?workflowType=machine_learning",
            "model": f"{ui}/#/models/{cfg.mlflow.model_name}?workflowType=machine_learning",
            "tables": store.warehouse,
            "topics": [cfg.kafka.topics.events, cfg.kafka.topics.dlq, cfg.kafka.topics.scores],
        },
        "seconds": seconds,
    }


def main(argv: list[str] | None = None, *, stop_spark: bool = True) -> None:
    args = parse_args(argv)
    if args.big:
        args.users, args.days = 10_000, 180
    cfg = load_config(args.config)
    t0 = time.monotonic()
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        seconds[name] = round(now - since, 1)
        return now

    remote = reset(cfg)
    t = lap("reset", t0)
    # The JVM starts on the other core while the simulator (one Python thread) produces.
    with ThreadPoolExecutor(max_workers=1) as pool:
        session = pool.submit(build_spark, cfg, app_name="demo")
        sim = Simulation(cfg, args.users, args.days + args.live_days, args.seed, args.bad_every)
        produced = sim.produce(args.days)
        t = lap("simulate", t)
        spark = session.result()
    reset_remote(spark, remote)
    run_feature_stream(spark, cfg)
    t = lap("stream_features", t)

    from training.pipeline import train

    say("training (point-in-time training set, LightGBM, baselines, MLflow, gate)")
    with acting_as(cfg.mlflow, "trainer"):
        result = train(spark, cfg)
    training = {**result.summary(), "experiment_id": result.experiment_id}
    t = lap("train", t)
    run_scorer(spark, cfg)
    t = lap("stream_scores", t)

    if args.live_days:
        produced += live_on(spark, cfg, sim, args.days, args.live_days, args.live_step)
    t = lap("live", t)
    with acting_as(cfg.mlflow, "trainer"):
        # Report only: the demo's process does not drift, and its summary names one champion.
        report, _ = check_and_act(spark, cfg, retrain_on_breach=False, log=say)
    t = lap("realised", t)
    seconds["total"] = round(time.monotonic() - t0, 1)

    summary = summarize(spark, cfg, produced, training, seconds, report)
    out = cfg.resolve(args.summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, out)
    if stop_spark:
        spark.stop()


def print_summary(s: dict[str, Any], path: Path) -> None:
    ev, tr, sc = s["events"], s["training"], s["scores"]
    print("\n=== churn pipeline demo ===")
    why = ", ".join(f"{k} {v:,}" for k, v in sorted(ev["quarantined_by_reason"].items()))
    print(
        f"events      produced {ev['produced']:,}; valid {ev['valid']:,}; "
        f"quarantined {ev['quarantined']:,}" + (f" ({why})" if why else "")
    )
    print(
        f"features    {s['users']:,} users, {s['daily_rows']:,} daily rows, "
        f"{s['feature_rows']:,} feature vectors"
    )
    print(
        f"model       {tr['model']} ({'promoted to champion' if tr['promoted'] else 'not promoted'}: "
        f"{tr['reason']})"
    )
    print(f"            {'scorer':10s} {'roc_auc':>8s} {'pr_auc':>8s}")
    for name, m in tr["test_metrics"].items():
        print(f"            {name:10s} {m['roc_auc']:8.4f} {m['pr_auc']:8.4f}")
    print(
        f"scores      {sc['rows']:,} rows by {', '.join(sc['model_versions'])}: "
        f"{sc['users_scored']:,} users scored (active in the last {sc['lookback_days']} days), "
        f"{sc['users_lapsed']:,} lapsed; latest by band: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(sc["latest_by_band"].items()))
    )
    days = s["realised"]["rows"]
    print(
        f"realised    {len(days)} scoring day(s) with a known outcome"
        + (
            ": "
            + "; ".join(
                f"{d['features_as_of']} v{d['model'].split('/')[1]} "
                f"roc_auc {d['roc_auc']:.3f} lift {d['lift_top_decile']:.1f} ({d['users']:,} users)"
                for d in days
            )
            if days
            else " yet (a day's horizon has to pass)"
        )
    )
    w = s["where"]
    print(f"look at     MLflow UI {w['mlflow_ui']}: training runs {w['runs']}, model {w['model']}")
    print(f"            tables under {w['tables']}; topics {', '.join(w['topics'])}")
    print("time        " + ", ".join(f"{k} {v:.0f}s" for k, v in s["seconds"].items()))
    print(f"summary     {path}")
    print("The stack stays up for exploring; `make down` stops it.")


if __name__ == "__main__":
    run(main, "demo")
