"""Drift of the live population against the champion's, and a retraining when it breaches.

The champion's training run keeps the distribution of each feature and of the score on
its newest cutoff's rows (``drift/reference.json``). This job compares the live feature
vectors of the champion's population (users active within the lookback it was trained
with, each at their newest ``as_of``) and the champion's live scores with it: the
population stability index (PSI) per feature and for the score (scoring/monitor.py). It
logs a report (table, plot, one metric per feature) as a run of the experiment
``<mlflow.experiment>-drift``. When a PSI exceeds ``monitoring.drift_psi_threshold``, it
starts a training run through the scheduler's lock (skipped if one is running); that run
is tagged ``churn.trigger = drift`` with the reason. The scheduler (jobs.schedule_train)
runs the same check at each tick.

  python -m jobs.drift               # check, report, retrain on a breach
  python -m jobs.drift --no-retrain  # check and report only
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from features.registry import FEATURE_NAMES
from infra.cli import add_config_arguments, run
from infra.config import Config, load_config
from infra.mlflow_io import acting_as
from infra.spark import build_spark
from scoring.inputs import to_frame
from scoring.latest import current
from scoring.model import LOOKBACK_PARAM
from scoring.monitor import DRIFT_REFERENCE, SCORE, drift_against, drift_figure
from scoring.score import in_population
from scoring.sink import scores_path
from store.tables import FeatureStore, latest_per_user, table_exists
from training.pipeline import retrain
from training.registry import champion_version, experiment_id, tracking
from training.result import Trigger
from training.schedule import Decision


@dataclass(frozen=True)
class DriftReport:
    """One check: the champion it judged, the live users, the PSI table and the verdict."""

    model: str
    version: int
    live_users: int
    scored_users: int
    table: pd.DataFrame  # monitor.drift_against's columns
    threshold: float
    run_id: str = ""

    @property
    def breached(self) -> pd.DataFrame:
        """The rows over the threshold that can start a retraining (monitor.comparable)."""
        return self.table[(self.table["psi"] > self.threshold) & self.table["triggers"]]

    def reason(self) -> str:
        top = self.breached.head(5)
        if top.empty:
            counted = self.table[self.table["triggers"]]
            worst = counted.iloc[0]
            return (
                f"no drift: PSI at most {worst['psi']:.3f} ({worst['feature']}) <= "
                f"{self.threshold:g} over the {len(counted)} checks that count"
            )
        named = ", ".join(f"{r.feature} {r.psi:.3f}" for r in top.itertuples())
        return (
            f"drift: PSI > {self.threshold:g} in {len(self.breached)} of "
            f"{int(self.table['triggers'].sum())} "
            f"({named}) on {self.live_users:,} live users against {self.model} v{self.version}"
        )

    def lines(self, top: int = 10) -> list[str]:
        out = [
            f"drift of {self.live_users:,} live users ({self.scored_users:,} with a champion "
            f"score) against {self.model} v{self.version}'s reference; threshold {self.threshold:g}",
            f"  {'feature':34s} {'psi':>7s}  {'reading':9s} {'ref mean':>10s} {'live mean':>10s}",
        ]
        for r in self.table.head(top).itertuples():
            out.append(
                f"  {r.feature:34s} {r.psi:7.3f}  {r.shift:9s} "
                f"{r.reference_mean:10.3g} {r.live_mean:10.3g}"
                + ("" if r.triggers else "  (reported only)")
            )
        out.append(f"  -> {self.reason()}")
        if self.run_id:
            out.append(f"  report: MLflow run {self.run_id}")
        return out


def live_population(spark: SparkSession, cfg: Config, lookback_days: int) -> pd.DataFrame:
    """Each user's newest feature vector, of the users in the population (in_population)."""
    store = FeatureStore(cfg.warehouse_location())
    vectors = latest_per_user(store.read(spark, "user_features"))
    frame = to_frame(vectors.select(F.col("user_id"), *[F.col(n) for n in FEATURE_NAMES]))
    return frame[in_population(frame, lookback_days)].reset_index(drop=True)


def live_scores(spark: SparkSession, cfg: Config, model: str, version: int) -> np.ndarray | None:
    """The live scores the champion gave (None before any)."""
    path = scores_path(cfg.warehouse_location())
    if not table_exists(spark, path):
        return None
    live = current(spark.read.format("delta").load(path)).where(
        (F.col("model_name") == model) & (F.col("model_version") == version)
    )
    scores = to_frame(live.select("score"))["score"].to_numpy(dtype=np.float64)
    return scores if len(scores) else None


def check(
    spark: SparkSession, cfg: Config, *, threshold: float | None = None
) -> DriftReport | None:
    """Compare the live population with the champion's reference and log the report to
    MLflow; None when there is no champion yet, or no reference with it."""
    import mlflow

    name, uri = cfg.mlflow.model_name, cfg.mlflow.tracking_uri
    limit = cfg.monitoring.drift_psi_threshold if threshold is None else threshold
    if not FeatureStore(cfg.warehouse_location()).exists(spark, "user_features"):
        return None
    with tracking(uri) as client:
        champ = champion_version(client, name)
        if champ is None or champ.run_id is None:
            return None
        params = client.get_run(champ.run_id).data.params
        try:
            ref: dict[str, Any] = mlflow.artifacts.load_dict(
                f"runs:/{champ.run_id}/{DRIFT_REFERENCE}"
            )
        except Exception:  # a champion trained before the reference was kept
            return None
        version = int(champ.version)
        live = live_population(spark, cfg, int(params[LOOKBACK_PARAM]))
        scores = live_scores(spark, cfg, name, version)
        table = drift_against(ref, live, scores)
        report = DriftReport(
            name, version, len(live), 0 if scores is None else len(scores), table, limit
        )
        exp = experiment_id(client, f"{cfg.mlflow.experiment}-drift")
        with mlflow.start_run(experiment_id=exp, run_name=f"drift {name} v{version}") as run:
            mlflow.set_tags(
                {
                    "churn.run_kind": "drift",
                    "drift.model": f"{name}/{version}",
                    "drift.breached": str(not report.breached.empty).lower(),
                    "drift.verdict": report.reason()[:5000],
                }
            )
            by_feature = dict(zip(table["feature"], table["psi"], strict=True))
            mlflow.log_metrics(
                {
                    "psi_max": float(table["psi"].max()),
                    "psi_score": float(by_feature.get(SCORE, float("nan"))),
                    "breached": float(len(report.breached)),
                    "live_users": float(len(live)),
                    **{f"psi.{k}": float(v) for k, v in by_feature.items()},
                }
            )
            mlflow.log_text(table.to_csv(index=False), "drift/report.csv")
            mlflow.log_figure(drift_figure(table), "drift/psi.png")
        return replace(report, run_id=run.info.run_id)


def check_and_act(
    spark: SparkSession, cfg: Config, *, retrain_on_breach: bool = True, log=print
) -> tuple[DriftReport | None, Decision | None]:
    """The drift check, and the retraining it calls for; what the job and the scheduler run."""
    t0 = time.monotonic()
    report = check(spark, cfg)
    if report is None:
        log("drift: no features, or no champion with a drift reference, yet: nothing to compare")
        return None, None
    for line in report.lines():
        log(line)
    log(f"drift: checked in {time.monotonic() - t0:.1f}s")
    if report.breached.empty or not retrain_on_breach:
        return report, None
    return report, retrain(spark, cfg, Trigger("drift", report.reason()), log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jobs.drift",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument(
        "--no-retrain", action="store_true", help="report only, even when the threshold is crossed"
    )
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    with acting_as(cfg.mlflow, "trainer"):
        spark = build_spark(cfg, app_name="drift")
        try:
            _, decision = check_and_act(spark, cfg, retrain_on_breach=not args.no_retrain)
        finally:
            spark.stop()
    return 1 if decision is not None and decision.action == "failed" else 0


if __name__ == "__main__":
    run(main, "drift")
