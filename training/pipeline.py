"""One training run, end to end: `train(spark, cfg)`.

read the daily table at one Delta version -> cutoffs -> out-of-time split -> point-in-time
rows (one Spark job for every cutoff) -> LightGBM + baselines -> test metrics -> MLflow run
(params, lineage, metrics, plots, model) -> register -> `challenger` -> gate -> maybe
`champion`. jobs/train.py, the scheduler and the demo all call `train`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.registry import FEATURE_NAMES
from infra.config import Config, TrainingConfig
from store.tables import FeatureStore
from training.baselines import fit_logistic, fit_recency
from training.dataset import daily_columns, training_set
from training.evaluate import binary_metrics
from training.model import fit_lightgbm, lightgbm_params, positive_weight, predict
from training.progress import say, stage
from training.result import MANUAL, Fitted, TrainingResult, Trigger
from training.schedule import Decision, run_guarded
from training.spine import LABEL, SPINE_KEY, check_explicit_cutoffs, scheduled_cutoffs
from training.split import CutoffSplit, split_cutoffs, split_frame
from training.tracking import log_run


def warehouse(cfg: Config) -> str:
    """storage.warehouse: URIs (s3a://, hdfs://) as given, local paths resolved."""
    return cfg.warehouse_location()


def data_range(daily: DataFrame) -> tuple[date, date]:
    """(first activity_date, data_end = last activity_date + 1 day); fails on an empty table."""
    row = daily.agg(F.min("activity_date").alias("a"), F.max("activity_date").alias("b")).first()
    if row is None or row["a"] is None:
        raise ValueError("the daily table is empty: nothing to train on")
    return row["a"], row["b"] + timedelta(days=1)


def resolve_cutoffs(first_day: date, data_end: date, t: TrainingConfig) -> list[date]:
    """The labelled cutoffs to use: the explicit list (checked) or the schedule."""
    if t.cutoffs:
        return check_explicit_cutoffs(t.cutoffs, data_end, t.horizon_days)
    return scheduled_cutoffs(
        first_day,
        data_end,
        horizon_days=t.horizon_days,
        step_days=t.step_days,
        min_history_days=t.min_history_days,
        max_cutoffs=t.max_cutoffs,
    )


def plan_split(first_day: date, data_end: date, t: TrainingConfig) -> CutoffSplit:
    """Cutoffs and their out-of-time split, before any Spark work (fails fast if too few)."""
    return split_cutoffs(
        resolve_cutoffs(first_day, data_end, t),
        valid_cutoffs=t.valid_cutoffs,
        test_cutoffs=t.test_cutoffs,
        purge_days=t.horizon_days if t.purge_overlap else 0,
    )


def collect_rows(
    daily: DataFrame, cutoffs: list[date], *, lookback_days: int, horizon_days: int
) -> pd.DataFrame:
    """training_set rows as pandas: one Spark job for every cutoff, then a line per cutoff.

    One plan whose work grows linearly with the rows and the cutoffs (docs/decisions.md,
    decision 37); it replaced a job per cutoff, whose planning and whole-history scans cost
    2-5 s each.
    """
    rows = (
        training_set(daily, cutoffs, lookback_days=lookback_days, horizon_days=horizon_days)
        .toArrow()
        .to_pandas()
    )
    rows[FEATURE_NAMES] = rows[FEATURE_NAMES].astype("float64")
    rows[LABEL] = rows[LABEL].astype("int64")
    if rows.duplicated(list(SPINE_KEY)).any():
        raise ValueError(
            "training rows are not unique per (user_id, cutoff): "
            "is the daily table one row per (user, day)?"
        )
    rows = rows.sort_values(list(SPINE_KEY)[::-1], kind="stable", ignore_index=True)
    for cutoff, part in rows.groupby("cutoff", sort=True):
        say(f"  cutoff {cutoff}: {len(part)} rows, churn {part[LABEL].mean():.1%}")
    return rows


def fit_and_evaluate(parts: dict[str, pd.DataFrame], t: TrainingConfig) -> Fitted:
    """LightGBM with early stopping on valid, the two baselines, test metrics for all three."""
    for name, part in parts.items():
        if part[LABEL].nunique() < 2:
            labels = sorted(part[LABEL].unique().tolist())
            raise ValueError(
                f"the {name} rows ({len(part)}) hold labels {labels}, not both 0 and 1: "
                "use more cutoffs or a different horizon"
            )
    x = {s: p[FEATURE_NAMES] for s, p in parts.items()}
    y = {s: p[LABEL].to_numpy() for s, p in parts.items()}
    hyper = t.lightgbm.model_dump()
    params = lightgbm_params(hyper, positive_weight(y["train"], t.lightgbm.scale_pos_weight))
    with stage("LightGBM fit") as info:
        booster = fit_lightgbm(
            x["train"],
            y["train"],
            x["valid"],
            y["valid"],
            params,
            num_boost_round=t.lightgbm.num_boost_round,
            early_stopping_rounds=t.lightgbm.early_stopping_rounds,
        )
        info["trees"] = booster.num_trees()
    with stage("baselines fit"):
        recency = fit_recency(x["train"], y["train"])
        logistic = fit_logistic(x["train"], y["train"], FEATURE_NAMES)
    scores = {
        "model": predict(booster, x["test"]),
        "recency": recency.predict(x["test"]),
        "logistic": logistic.predict(x["test"]),
    }
    metrics = {name: binary_metrics(y["test"], p) for name, p in scores.items()}
    valid = binary_metrics(y["valid"], predict(booster, x["valid"]))
    return Fitted(booster, params, parts, scores, metrics, valid)


def train(
    spark: SparkSession,
    cfg: Config,
    *,
    table_version: int | None = None,
    trigger: Trigger = MANUAL,
) -> TrainingResult:
    """Train, evaluate, log, register and gate one model from the daily table.

    table_version pins the Delta version to read (the scheduler passes the one it checked);
    None reads the current one. ``trigger`` (why this run started) is tagged on the run.
    Prints progress; returns a TrainingResult.
    """
    t0 = time.monotonic()
    t = cfg.training
    store, path = daily_table(cfg)
    version = store.version(spark, t.table) if table_version is None else table_version
    say(f"reading {path} at version {version}")
    daily = daily_columns(
        spark.read.format("delta").option("versionAsOf", version).load(path)
    ).cache()
    try:
        with stage("data range") as info:
            first_day, data_end = data_range(daily)
            info["days"] = f"{first_day} .. {data_end - timedelta(days=1)}"
        split = plan_split(first_day, data_end, t)
        say(
            f"cutoffs: train {len(split.train)} ({split.train[0]} .. {split.train[-1]}), "
            f"valid {', '.join(map(str, split.valid))}, test {', '.join(map(str, split.test))}"
            + (f", purged {len(split.purged)}" if split.purged else "")
        )
        cutoffs = sorted({*split.train, *split.valid, *split.test})
        with stage("point-in-time rows") as info:
            rows = collect_rows(
                daily,
                cutoffs,
                lookback_days=t.lookback_days,
                horizon_days=t.horizon_days,
            )
            info["rows"] = len(rows)
    finally:
        daily.unpersist()
    parts = split_frame(rows, split)
    fitted = fit_and_evaluate(parts, t)
    m = fitted.metrics
    say(
        "test roc_auc / pr_auc: "
        + ", ".join(f"{k} {v['roc_auc']:.4f} / {v['pr_auc']:.4f}" for k, v in m.items())
    )
    lineage = {
        "table_path": path,
        "table_version": version,
        "first_day": first_day,
        "data_end": data_end,
        "horizon_days": t.horizon_days,
        "lookback_days": t.lookback_days,
    }
    with stage("MLflow run, registry and gate"):
        result = log_run(cfg, fitted, split, lineage, trigger)
    result = replace(result, seconds=time.monotonic() - t0)
    say(
        f"run {result.run_id}: {result.model_name} v{result.model_version} "
        f"{'PROMOTED to champion' if result.promoted else 'not promoted'}: {result.decision.reason} "
        f"({result.seconds:.0f}s)"
    )
    return result


def daily_table(cfg: Config) -> tuple[FeatureStore, str]:
    """The feature store and the path of the daily table training reads."""
    store = FeatureStore(warehouse(cfg))
    return store, store.path(cfg.training.table)


def current_table_version(spark: SparkSession, cfg: Config) -> int | None:
    """The daily table's current Delta version, or None when it does not exist yet."""
    store, _ = daily_table(cfg)
    if not store.exists(spark, cfg.training.table):
        return None
    return store.version(spark, cfg.training.table)


def retrain(spark: SparkSession, cfg: Config, why: Trigger, log=print) -> Decision:
    """A training run through the scheduler's lock (skipped, not queued, when another holds
    it), even if the daily table has not changed since the last one: what a monitor that
    found a problem starts (jobs.drift, jobs.realised). ``why`` is tagged on the run."""
    return run_guarded(
        cfg.resolve(cfg.training.state_dir),
        current_version=lambda: current_table_version(spark, cfg),
        train=lambda v: train(spark, cfg, table_version=v, trigger=why).summary(),
        skip_unchanged=False,
        log=log,
    )
