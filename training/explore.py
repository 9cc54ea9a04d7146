"""Look back at training runs: the runs in MLflow, a run's exact training set, its champion.

Notebook 02 (notebooks/02_training_set_and_model.ipynb) is built from these functions.
A run's training set is rebuilt from what the run logged (``lineage.json``: the daily
table's path and Delta version, the cutoffs of each split, the horizon and lookback), so
the rows are the ones the model saw, not today's data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from features.registry import FEATURE_NAMES
from infra.config import Config
from infra.mlflow_io import acting_as
from training.baselines import fit_logistic, fit_recency
from training.dataset import daily_columns
from training.model import predict
from training.pipeline import collect_rows
from training.registry import champion_version, load_booster, tracking
from training.spine import LABEL
from training.split import SPLITS, CutoffSplit, split_frame

# Columns of `runs()`: what tells runs apart in a comparison.
RUN_METRICS = (
    "test_roc_auc",
    "test_pr_auc",
    "test_lift_top_decile",
    "recency_test_roc_auc",
    "logistic_test_roc_auc",
    "champion_test_roc_auc",
    "rows_train",
    "label_rate_test",
    "gate_promoted",
)


@contextmanager
def reading(cfg: Config) -> Iterator[MlflowClient]:
    """MLflow at cfg's server, as the read-only user of a server with authentication (the
    scorer's: a notebook looks, it never writes; docs/security.md)."""
    with acting_as(cfg.mlflow, "scorer"), tracking(cfg.mlflow.tracking_uri) as client:
        yield client


def runs(cfg: Config, max_results: int = 100) -> pd.DataFrame:
    """The experiment's finished runs, oldest first: metrics, data version, gate decision."""
    with reading(cfg):
        found = mlflow.search_runs(
            experiment_names=[cfg.mlflow.experiment],
            filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"],
            max_results=max_results,
            output_format="pandas",
        )
    assert isinstance(found, pd.DataFrame)
    columns = {
        "run_id": "run_id",
        "start_time": "start_time",
        "run_name": "tags.mlflow.runName",
        "table_version": "tags.data.table_version",
        "test_cutoffs": "tags.data.test_cutoffs",
    } | {m: f"metrics.{m}" for m in RUN_METRICS}
    out = pd.DataFrame(
        {name: found.get(col, np.nan) for name, col in columns.items()}, index=found.index
    )
    return out.reset_index(drop=True)


def runs_figure(table: pd.DataFrame) -> Figure:
    """Test ROC-AUC of each run next to its baselines (and the champion it was gated
    against); promoted runs are filled, the others hollow."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    x = np.arange(len(table))
    promoted = table["gate_promoted"].fillna(0).to_numpy() > 0
    ax.scatter(x[promoted], table["test_roc_auc"][promoted], s=60, label="model (promoted)")
    ax.scatter(
        x[~promoted],
        table["test_roc_auc"][~promoted],
        s=60,
        facecolors="none",
        edgecolors="C0",
        label="model (not promoted)",
    )
    for col, style in (
        ("champion_test_roc_auc", "x"),
        ("logistic_test_roc_auc", "s"),
        ("recency_test_roc_auc", "v"),
    ):
        ax.scatter(x, table[col], marker=style, s=30, label=col.removesuffix("_test_roc_auc"))
    labels = [f"{n}\n{str(r)[:8]}" for n, r in zip(table["run_name"], table["run_id"], strict=True)]
    ax.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
    ax.set(ylabel="ROC-AUC on the run's test cutoff", title="Runs in MLflow, oldest first")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def champion(cfg: Config) -> tuple[str, str, lgb.Booster]:
    """(version, run_id, booster) of the model behind the `champion` alias."""
    with reading(cfg) as client:
        found = champion_version(client, cfg.mlflow.model_name)
        if found is None:
            raise LookupError(
                f"{cfg.mlflow.model_name} has no champion yet: run jobs.train (or make demo)"
            )
        return str(found.version), str(found.run_id), load_booster(found.name, found.version)


def run_lineage(cfg: Config, run_id: str) -> dict[str, Any]:
    """The run's lineage.json: table path and version, cutoffs per split, rows, label rates."""
    with reading(cfg):
        return dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/lineage.json"))


def run_rows(spark: SparkSession, cfg: Config, run_id: str) -> dict[str, pd.DataFrame]:
    """The run's train / valid / test rows, rebuilt point-in-time from the Delta version it
    read. Fails when the row counts differ from what the run logged."""
    lineage = run_lineage(cfg, run_id)
    cutoffs = {s: tuple(date.fromisoformat(d) for d in lineage["cutoffs"][s]) for s in SPLITS}
    daily = daily_columns(
        spark.read.format("delta")
        .option("versionAsOf", int(lineage["table_version"]))
        .load(lineage["table_path"])
    )
    rows = collect_rows(
        daily,
        sorted({d for days in cutoffs.values() for d in days}),
        lookback_days=int(lineage["lookback_days"]),
        horizon_days=int(lineage["horizon_days"]),
    )
    parts = split_frame(rows, CutoffSplit(cutoffs["train"], cutoffs["valid"], cutoffs["test"]))
    got = {s: len(p) for s, p in parts.items()}
    if got != {s: int(n) for s, n in lineage["rows"].items()}:
        raise RuntimeError(f"rebuilt rows {got} differ from the run's {lineage['rows']}")
    return parts


def label_rates(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per cutoff: its split, eligible users (rows) and the share that churned."""
    frames = [p.assign(split=s) for s, p in parts.items()]
    rows = pd.concat(frames, ignore_index=True)
    out = rows.groupby(["cutoff", "split"], as_index=False).agg(
        rows=(LABEL, "size"), churn_rate=(LABEL, "mean")
    )
    return out.sort_values("cutoff").reset_index(drop=True)


def label_rate_figure(rates: pd.DataFrame) -> Figure:
    """Churn rate (line) and eligible users (bars) per cutoff, coloured by split."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    when = pd.to_datetime(rates["cutoff"])
    colours = {"train": "C0", "valid": "C1", "test": "C2"}
    twin = ax.twinx()
    twin.bar(when, rates["rows"], width=3, color=[colours[s] for s in rates["split"]], alpha=0.3)
    twin.set_ylabel("eligible users (bars)")
    ax.plot(when, rates["churn_rate"], color="black", zorder=3)
    for s, c in colours.items():
        sel = rates["split"] == s
        ax.scatter(when[sel], rates.loc[sel, "churn_rate"], color=c, zorder=4, label=s)
    ax.set(xlabel="cutoff", ylabel="churn rate (line)", title="Label rate over cutoffs")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def test_scores(booster: lgb.Booster, parts: dict[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    """The model's test-row probabilities next to the two baselines refitted on train."""
    x_train, y_train = parts["train"][FEATURE_NAMES], parts["train"][LABEL].to_numpy()
    x_test = parts["test"][FEATURE_NAMES]
    return {
        "model": predict(booster, x_test),
        "recency": fit_recency(x_train, y_train).predict(x_test),
        "logistic": fit_logistic(x_train, y_train, FEATURE_NAMES).predict(x_test),
    }
