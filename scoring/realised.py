"""Realised performance: how yesterday's scores turned out, once their labels matured.

A score with ``features_as_of = A`` was given at cutoff A in training's sense (features from
the days before A). Its label is training's label at that cutoff (training.spine.label):
churned = no active day in [A, A + horizon), with the horizon the scoring version was
trained with. A day A is measured once that window lies inside the daily table:
A + horizon <= data_end (the last activity_date + 1), training's own rule.

Per (scoring day, model version), every user the version scored at A counts once, with the
last score it gave them at A (the newest ``features_version`` of that day: late events may
still have changed the vector during the day). Lapsed records are not scores and do not
count: they are the users outside the population, as in training's spine.

The measures: ROC-AUC, precision and lift in the top decile (training.evaluate, so that the
realised numbers read like the test numbers), and calibration by band: the mean score
against the observed churn rate, per band. One row per (day, model version) in the Delta
table ``realised_performance`` beside ``churn_scores`` (docs/decisions.md, decision 71).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from scoring.inputs import to_frame
from scoring.latest import with_status
from scoring.score import BANDS, SCORED
from store.tables import table_exists
from training.evaluate import top_fraction
from training.spine import LABEL, label

REALISED_TABLE = "realised_performance"
KEY: tuple[str, ...] = ("features_as_of", "model_name", "model_version")
MEASURES: tuple[str, ...] = (
    "users",
    "churned",
    "churn_rate",
    "mean_score",
    "roc_auc",
    "precision_top_decile",
    "lift_top_decile",
)
BAND_MEASURES: tuple[str, ...] = tuple(
    f"{m}_{band}" for band in BANDS for m in ("users", "mean_score", "churn_rate")
)
# The table's columns, in order (computed_at is when the row was written).
COLUMNS: tuple[str, ...] = (*KEY, "horizon_days", *MEASURES, *BAND_MEASURES, "computed_at")


def realised_path(warehouse: str) -> str:
    """``realised_performance`` next to ``churn_scores``."""
    return f"{warehouse.rstrip('/')}/{REALISED_TABLE}"


def read_realised(spark: SparkSession, warehouse: str) -> pd.DataFrame:
    """Every row of realised_performance, by day, model and version (empty, with its
    columns, before the first)."""
    path = realised_path(warehouse)
    if not table_exists(spark, path):
        return pd.DataFrame(columns=list(COLUMNS))
    frame = to_frame(spark.read.format("delta").load(path))
    return frame.sort_values(list(KEY), ignore_index=True)


def is_matured(day: date, data_end: date, horizon_days: int) -> bool:
    """True when the label window [day, day + horizon) lies inside the data (spine.is_labelled)."""
    return day + timedelta(days=horizon_days) <= data_end


def scores_by_day(scores: DataFrame) -> DataFrame:
    """(features_as_of, model_name, model_version, user_id, score, risk_band): the last score
    each version gave each user on each day, from a churn_scores DataFrame."""
    group = [F.col("features_as_of"), F.col("model_name"), F.col("model_version"), F.col("user_id")]
    last = F.max_by(
        F.struct(F.col("score"), F.col("risk_band")),
        F.struct(F.col("features_version"), F.col("scored_at")),
    )
    return (
        with_status(scores)
        .where(F.col("status") == SCORED)
        .groupBy(*group)
        .agg(last.alias("_s"))
        .select(*group, F.col("_s.score").alias("score"), F.col("_s.risk_band").alias("risk_band"))
    )


def with_labels(scored: DataFrame, daily: DataFrame, horizon_days: int) -> DataFrame:
    """``scored`` (scores_by_day rows) with ``churned``, training's label of the same user at
    the same cutoff (the day the features were as of)."""
    keys = scored.select(F.col("user_id"), F.col("features_as_of").alias("cutoff")).distinct()
    labels = label(daily, keys, horizon_days).withColumnRenamed("cutoff", "features_as_of")
    return scored.join(labels, on=["user_id", "features_as_of"], how="inner")


def measure(y: np.ndarray, p: np.ndarray, bands: np.ndarray) -> dict[str, float]:
    """The measures of one (day, version): MEASURES and BAND_MEASURES (NaN where undefined:
    ROC-AUC with one class only, a band without users)."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    both = len(np.unique(y)) == 2
    precision, lift = top_fraction(y, p) if len(y) else (float("nan"), float("nan"))
    out: dict[str, float] = {
        "users": float(len(y)),
        "churned": float(y.sum()),
        "churn_rate": float(y.mean()) if len(y) else float("nan"),
        "mean_score": float(p.mean()) if len(y) else float("nan"),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "precision_top_decile": precision,
        "lift_top_decile": lift,
    }
    for band in BANDS:
        inside = np.asarray(bands) == band
        n = int(inside.sum())
        out[f"users_{band}"] = float(n)
        out[f"mean_score_{band}"] = float(p[inside].mean()) if n else float("nan")
        out[f"churn_rate_{band}"] = float(y[inside].mean()) if n else float("nan")
    return out


def realised_table(
    rows: pd.DataFrame, horizons: Mapping[tuple[str, int], int], computed_at: pd.Timestamp
) -> pd.DataFrame:
    """One row per (features_as_of, model_name, model_version) of ``rows`` (with_labels' columns
    on the driver), in COLUMNS order, sorted by day then version."""
    out = []
    for (day, name, version), part in rows.groupby(list(KEY), sort=True):
        m = measure(part[LABEL].to_numpy(), part["score"].to_numpy(), part["risk_band"].to_numpy())
        out.append(
            {
                "features_as_of": day,
                "model_name": name,
                "model_version": int(version),
                "horizon_days": int(horizons[(name, int(version))]),
                **m,
                "computed_at": computed_at,
            }
        )
    table = pd.DataFrame(out, columns=list(COLUMNS))
    for c in ("users", "churned", *(f"users_{b}" for b in BANDS)):
        table[c] = table[c].astype("int64")
    return table


def below_floor(
    table: pd.DataFrame,
    model: tuple[str, int],
    floor: float,
    *,
    min_users: int,
) -> str:
    """Why ``model`` needs replacing, or "": its ROC-AUC on its newest day in ``table`` is
    under ``floor``. A day with fewer than ``min_users`` scored users, or one class only,
    cannot say so."""
    name, version = model
    mine = table[(table["model_name"] == name) & (table["model_version"] == version)]
    if mine.empty:
        return ""
    newest = mine.sort_values("features_as_of").iloc[-1]
    auc = float(newest["roc_auc"])
    if newest["users"] < min_users or not auc < floor:  # NaN does not breach
        return ""
    return (
        f"realised ROC-AUC of {name} v{version} {auc:.4f} < floor {floor:.4f} on its scores as of "
        f"{newest['features_as_of']} ({int(newest['users']):,} users, "
        f"{int(newest['churned']):,} churned within {int(newest['horizon_days'])} days)"
    )


def realised_figure(table: pd.DataFrame, floor: float | None = None) -> Figure:
    """ROC-AUC and top-decile lift per model version over the scoring days, and calibration:
    each band's mean score against its observed churn rate."""
    fig = Figure(figsize=(13, 4))
    auc_ax, lift_ax, cal_ax = fig.subplots(1, 3)
    for (name, version), part in table.sort_values("features_as_of").groupby(
        ["model_name", "model_version"]
    ):
        days = pd.to_datetime(part["features_as_of"])
        label_ = f"{name} v{version}"
        auc_ax.plot(days, part["roc_auc"], marker="o", label=label_)
        lift_ax.plot(days, part["lift_top_decile"], marker="o", label=label_)
    if floor is not None:
        auc_ax.axhline(floor, color="firebrick", linestyle="--", linewidth=1, label="gate floor")
    auc_ax.set(title="Realised ROC-AUC", xlabel="scores as of", ylabel="ROC-AUC")
    lift_ax.set(title="Realised top-decile lift", xlabel="scores as of", ylabel="lift")
    for ax in (auc_ax, lift_ax):
        ax.legend(fontsize=8)
        locator = mdates.AutoDateLocator(maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    colours = {"low": "seagreen", "medium": "orange", "high": "firebrick"}
    for band in BANDS:
        cal_ax.scatter(
            table[f"mean_score_{band}"],
            table[f"churn_rate_{band}"],
            s=np.clip(table[f"users_{band}"].to_numpy(dtype=float), 10, 200),
            color=colours[band],
            alpha=0.7,
            label=band,
        )
    cal_ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    cal_ax.set(
        title="Calibration by band (a dot per day, version)",
        xlabel="mean score",
        ylabel="observed churn rate",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    cal_ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
