"""Realised performance of the scores whose horizon has passed, and a retraining when the
champion's falls below the gate's floor.

For each scoring day A whose label window [A, A + horizon) now lies inside the daily table,
and each model version that scored on it, join the scores with training's label of the
same user at the same cutoff, and measure ROC-AUC, top-decile precision and lift, and
calibration by band (scoring/realised.py). The rows go to the Delta table
``realised_performance`` (one per day and version, merged: a rerun replaces, never
duplicates) and to a run of the MLflow experiment ``<mlflow.experiment>-realised`` (the
table, a plot over time, one metric series per version stamped with the scoring day).

Days already in the table are skipped (``--recompute`` measures every matured day again).
When the champion's ROC-AUC on its newest newly measured day is under
``training.gate.floors.roc_auc``, a training run starts through the scheduler's lock,
tagged ``churn.trigger = realised``; its gate waives the improvement margin over the
failing champion and says so. The scheduler (jobs.schedule_train) runs the same check at
each tick.

  python -m jobs.realised               # measure what matured, retrain on a breach
  python -m jobs.realised --no-retrain  # measure and report only
  python -m jobs.realised --recompute   # measure every matured day again
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from datetime import date
from functools import reduce

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from infra.cli import add_config_arguments, run
from infra.config import Config, load_config
from infra.mlflow_io import acting_as
from infra.spark import build_spark
from scoring.inputs import to_frame
from scoring.model import HORIZON_PARAM, MlflowRegistry
from scoring.realised import (
    COLUMNS,
    KEY,
    below_floor,
    read_realised,
    realised_figure,
    realised_path,
    realised_table,
    scores_by_day,
    with_labels,
)
from scoring.score import BANDS
from scoring.sink import scores_path
from store.tables import table_exists
from training.pipeline import daily_table, data_range, retrain
from training.registry import champion_version, experiment_id, tracking
from training.result import REALISED, Trigger
from training.schedule import Decision, utcnow

SCHEMA = (
    "features_as_of date, model_name string, model_version long, horizon_days int, "
    "users long, churned long, churn_rate double, mean_score double, roc_auc double, "
    "precision_top_decile double, lift_top_decile double, "
    + ", ".join(f"users_{b} long, mean_score_{b} double, churn_rate_{b} double" for b in BANDS)
    + ", computed_at timestamp"
)


@dataclass(frozen=True)
class RealisedReport:
    """One measurement: the rows it added, the whole table after it, and the verdict."""

    data_end: date
    new: pd.DataFrame  # realised_table rows measured now
    table: pd.DataFrame  # every row of realised_performance
    champion: tuple[str, int] | None
    floor: float | None
    breach: str = ""  # below_floor's reason, "" when none
    run_id: str = ""

    def lines(self) -> list[str]:
        out = [
            f"realised performance: {len(self.new)} new (day, version) rows; labels known for "
            f"days before {self.data_end}; {len(self.table)} rows in all"
        ]
        if not self.new.empty:
            out.append(
                f"  {'as of':10s} {'model':>8s} {'users':>7s} {'churn':>6s} {'roc_auc':>8s} "
                f"{'prec@10%':>8s} {'lift':>5s}  score/rate by band (low, medium, high)"
            )
            for r in self.new.itertuples():
                bands = "  ".join(
                    f"{getattr(r, f'mean_score_{b}'):.2f}/{getattr(r, f'churn_rate_{b}'):.2f}"
                    for b in BANDS
                )
                out.append(
                    f"  {r.features_as_of!s:10s} {'v' + str(r.model_version):>8s} {r.users:7,d} "
                    f"{r.churn_rate:6.1%} {r.roc_auc:8.4f} {r.precision_top_decile:8.3f} "
                    f"{r.lift_top_decile:5.2f}  {bands}"
                )
        if self.breach:
            out.append(f"  -> {self.breach}")
        elif self.champion is not None and self.floor is not None:
            name, version = self.champion
            out.append(
                f"  -> {name} v{version}: no newly measured day under the floor "
                f"roc_auc {self.floor:.4f}"
            )
        if self.run_id:
            out.append(f"  report: MLflow run {self.run_id}")
        return out


def horizons(cfg: Config, versions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The label horizon each version was trained with (its run's params); versions whose
    run records none, or that the registry no longer holds, are left out, and not measured."""
    from mlflow.exceptions import MlflowException

    registry = MlflowRegistry(cfg.mlflow.tracking_uri)
    out: dict[tuple[str, int], int] = {}
    for name, version in versions:
        try:
            value = registry.training_param(name, version, HORIZON_PARAM)
        except MlflowException as exc:  # deleted, or scored under another registry's name
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            continue
        if value is not None:
            out[(name, version)] = int(value)
    return out


def pending(
    spark: SparkSession,
    scored: DataFrame,
    horizon: dict[tuple[str, int], int],
    data_end: date,
    done: DataFrame | None,
) -> DataFrame:
    """The scores_by_day rows of matured days, of the (day, version) pairs not in ``done``."""
    known = spark.createDataFrame(
        [(n, v, h) for (n, v), h in horizon.items()],
        "model_name string, model_version long, horizon_days int",
    )
    matured = scored.join(F.broadcast(known), on=["model_name", "model_version"]).where(
        F.date_add(F.col("features_as_of"), F.col("horizon_days")) <= F.lit(data_end)
    )
    if done is not None:
        matured = matured.join(done.select(*KEY), on=list(KEY), how="left_anti")
    return matured


def write(spark: SparkSession, path: str, rows: pd.DataFrame) -> None:
    """Merge ``rows`` into the table by (day, model, version): rerun rows replace old ones."""
    from delta.tables import DeltaTable

    frame = spark.createDataFrame(rows[list(COLUMNS)], SCHEMA)
    if not table_exists(spark, path):
        frame.write.format("delta").mode("append").save(path)
        return
    on = " AND ".join(f"t.{k} = s.{k}" for k in KEY)
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(frame.alias("s"), on)
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


def measure(spark: SparkSession, cfg: Config, *, recompute: bool = False) -> RealisedReport | None:
    """Measure every matured (day, version) not measured yet, write and log them; None when
    there are no scores or no daily table yet."""
    warehouse = cfg.warehouse_location()
    scores, out = scores_path(warehouse), realised_path(warehouse)
    store, _ = daily_table(cfg)
    if not table_exists(spark, scores) or not store.exists(spark, cfg.training.table):
        return None
    # Read twice (its range, the labels): cached, as training does.
    daily = store.read(spark, cfg.training.table).cache()
    scored = scores_by_day(spark.read.format("delta").load(scores)).cache()
    try:
        _, data_end = data_range(daily)
        versions = [
            (r["model_name"], int(r["model_version"]))
            for r in scored.select("model_name", "model_version").distinct().collect()
        ]
        horizon = horizons(cfg, versions)
        done = None
        if not recompute and table_exists(spark, out):
            done = spark.read.format("delta").load(out)
        todo = pending(spark, scored, horizon, data_end, done)
        parts = [
            with_labels(todo.where(F.col("horizon_days") == h), daily, h)
            for h in sorted(set(horizon.values()))
        ]
        rows = to_frame(reduce(DataFrame.unionByName, parts)) if parts else pd.DataFrame()
    finally:
        scored.unpersist()
        daily.unpersist()
    new = (
        realised_table(rows, horizon, pd.Timestamp(utcnow()).tz_localize(None))
        if len(rows)
        else pd.DataFrame(columns=list(COLUMNS))
    )
    if len(new):
        write(spark, out, new)
    floor = cfg.training.gate.floors.get("roc_auc")
    with tracking(cfg.mlflow.tracking_uri) as client:
        champ = champion_version(client, cfg.mlflow.model_name)
    champion = None if champ is None else (cfg.mlflow.model_name, int(champ.version))
    breach = ""
    if champion is not None and floor is not None:
        breach = below_floor(new, champion, floor, min_users=cfg.monitoring.realised_min_users)
    report = RealisedReport(data_end, new, read_realised(spark, warehouse), champion, floor, breach)
    return replace(report, run_id=_log(cfg, report)) if len(new) else report


def _log(cfg: Config, report: RealisedReport) -> str:
    """One MLflow run of ``<experiment>-realised``: the new rows as metric series stamped
    with their scoring day, the whole table and its plot; returns the run id."""
    import mlflow
    from mlflow.entities import Metric

    with tracking(cfg.mlflow.tracking_uri) as client:
        exp = experiment_id(client, f"{cfg.mlflow.experiment}-realised")
        with mlflow.start_run(experiment_id=exp, run_name=f"realised to {report.data_end}") as run:
            mlflow.set_tags(
                {
                    "churn.run_kind": "realised",
                    "realised.data_end": str(report.data_end),
                    "realised.champion": ""
                    if report.champion is None
                    else f"{report.champion[0]}/{report.champion[1]}",
                    "realised.breached": str(bool(report.breach)).lower(),
                    "realised.verdict": (report.breach or "no breach")[:5000],
                }
            )
            metrics = []
            for r in report.new.itertuples():
                day = pd.Timestamp(r.features_as_of)
                stamp = int(day.tz_localize("UTC").timestamp() * 1000)
                step = (day - pd.Timestamp("1970-01-01")).days
                for m in ("roc_auc", "precision_top_decile", "lift_top_decile", "churn_rate"):
                    value = float(getattr(r, m))
                    if value == value:  # NaN (one class only) is left out
                        metrics.append(Metric(f"v{r.model_version}.{m}", value, stamp, step))
            for start in range(0, len(metrics), 1000):
                client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
            mlflow.log_text(report.table.to_csv(index=False), "realised/table.csv")
            mlflow.log_figure(
                realised_figure(report.table, report.floor), "realised/performance.png"
            )
        return run.info.run_id


def check_and_act(
    spark: SparkSession,
    cfg: Config,
    *,
    retrain_on_breach: bool = True,
    recompute: bool = False,
    log=print,
) -> tuple[RealisedReport | None, Decision | None]:
    """The measurement, and the retraining it calls for; what the job and the scheduler run."""
    t0 = time.monotonic()
    report = measure(spark, cfg, recompute=recompute)
    if report is None:
        log("realised: no scores, or no daily table, yet: nothing to measure")
        return None, None
    for line in report.lines():
        log(line)
    log(f"realised: measured in {time.monotonic() - t0:.1f}s")
    if not report.breach or not retrain_on_breach:
        return report, None
    return report, retrain(spark, cfg, Trigger(REALISED, report.breach), log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jobs.realised",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument(
        "--no-retrain", action="store_true", help="report only, even when the floor is crossed"
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="measure every matured day again, not only new ones",
    )
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    with acting_as(cfg.mlflow, "trainer"):
        spark = build_spark(cfg, app_name="realised")
        try:
            _, decision = check_and_act(
                spark, cfg, retrain_on_breach=not args.no_retrain, recompute=args.recompute
            )
        finally:
            spark.stop()
    return 1 if decision is not None and decision.action == "failed" else 0


if __name__ == "__main__":
    run(main, "realised")
