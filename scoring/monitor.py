"""Watch the live scores: the latest score per user, bands, reasons, and feature drift.

Notebook 03 (notebooks/03_live_scores.ipynb) is built from these functions.

Drift is the population stability index (PSI) of each feature between a reference (the
champion's training rows) and the live feature vectors: bins are the reference's deciles
(ties merged), nulls are a bin of their own, and
``PSI = sum((live% - ref%) * ln(live% / ref%))`` with shares floored at 1e-4. The usual
reading: below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 a shift worth a retrain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.registry import FEATURE_NAMES, FEATURES, Col, DaysSince
from scoring.latest import current
from scoring.score import BANDS, in_population

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
_FLOOR = 1e-4


def latest_scores(spark: SparkSession, path: str) -> pd.DataFrame:
    """The live scores: each user's latest record in the scores table when it is a score,
    not ``lapsed`` (scoring.latest), highest first."""
    table: DataFrame = spark.read.format("delta").load(path)
    live = current(table).drop("writer", "batch_id")
    return live.orderBy(F.desc("score")).toPandas()


def band_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per risk band (low, medium, high): users, their share, and the score range."""
    grouped = scores.groupby("risk_band")["score"]
    out = pd.DataFrame(
        {
            "users": grouped.size(),
            "min_score": grouped.min(),
            "mean_score": grouped.mean(),
            "max_score": grouped.max(),
        }
    ).reindex(list(BANDS))
    out["users"] = out["users"].fillna(0).astype("int64")
    out.insert(1, "share", out["users"] / max(int(out["users"].sum()), 1))
    out.index.name = "risk_band"
    return out


def score_figure(scores: pd.DataFrame, band_medium: float, band_high: float) -> Figure:
    """Histogram of the latest scores, coloured by band, with the two thresholds."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    edges = np.linspace(0, 1, 41).tolist()
    colours = {"low": "seagreen", "medium": "orange", "high": "firebrick"}
    for band in BANDS:
        values = scores.loc[scores["risk_band"] == band, "score"]
        ax.hist(values, bins=edges, color=colours[band], label=f"{band} ({len(values)})")
    for t in (band_medium, band_high):
        ax.axvline(t, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="churn score", ylabel="users", title="Latest score per user, by risk band")
    ax.legend()
    fig.tight_layout()
    return fig


def reason_counts(scores: pd.DataFrame) -> pd.DataFrame:
    """How often each feature is among a score's reasons, by band and in which position.

    Columns: feature, users (any position), first (the top reason), mean_contribution, and
    one column per band with reasons (users in that band).
    """
    rows = [
        {"feature": r["feature"], "rank": i, "band": band, "contribution": r["contribution"]}
        for reasons, band in zip(scores["reasons"], scores["risk_band"], strict=True)
        if reasons is not None
        for i, r in enumerate(reasons)
    ]
    if not rows:
        return pd.DataFrame(columns=["feature", "users", "first", "mean_contribution"])
    flat = pd.DataFrame(rows)
    out = flat.groupby("feature").agg(
        users=("rank", "size"),
        first=("rank", lambda r: int((r == 0).sum())),
        mean_contribution=("contribution", "mean"),
    )
    by_band = flat.pivot_table(index="feature", columns="band", values="rank", aggfunc="size")
    out = out.join(by_band.reindex(columns=[b for b in BANDS if b in by_band]).fillna(0))
    return out.sort_values(["users", "first"], ascending=False).reset_index()


def reasons_figure(counts: pd.DataFrame, top: int = 15) -> Figure:
    """The features most often named as a reason: all positions, and as the top reason."""
    rows = counts.head(top).iloc[::-1]
    fig = Figure(figsize=(8, 0.3 * len(rows) + 1.4))
    ax = fig.subplots()
    ax.barh(rows["feature"], rows["users"], color="lightsteelblue", label="among the top 3")
    ax.barh(rows["feature"], rows["first"], color="steelblue", label="the top reason")
    ax.set(xlabel="scored users", title="Why users are at risk (TreeSHAP reasons)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def eligible(live: pd.DataFrame, lookback_days: int) -> pd.DataFrame:
    """The live vectors of users a training set would hold: active in the last
    `lookback_days` (training.spine's rule, the scorer's population). Users who stopped long
    ago are not in any training row, so comparing them would report drift that is only churn."""
    return live[in_population(live, lookback_days)]


def _bins(reference: np.ndarray, n: int) -> np.ndarray:
    """Inner bin edges: the reference's quantiles, duplicates dropped."""
    finite = reference[~np.isnan(reference)]
    if finite.size == 0:
        return np.array([])
    return np.unique(np.quantile(finite, np.linspace(0, 1, n + 1)[1:-1]))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values per bin (right-closed, like the quantile edges), nulls last."""
    nulls = np.isnan(values)
    counts = np.bincount(
        np.searchsorted(edges, values[~nulls], side="left"), minlength=len(edges) + 1
    )
    return np.append(counts, nulls.sum()) / max(len(values), 1)


def binned(reference: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """A reference distribution as kept with a model: its bin edges and shares (nulls last),
    plus its mean and null share for the report."""
    ref = np.asarray(reference, dtype=np.float64)
    edges = _bins(ref, bins)
    return {
        "edges": edges.tolist(),
        "shares": _shares(ref, edges).tolist(),
        "mean": float(np.nanmean(ref)) if np.isfinite(ref).any() else float("nan"),
        "null": float(np.isnan(ref).mean()) if ref.size else 0.0,
    }


def psi_to(reference: dict[str, list[float]], live: np.ndarray) -> float:
    """PSI of ``live`` against a :func:`binned` reference (see the module doc)."""
    cur = np.asarray(live, dtype=np.float64)
    p = np.maximum(np.asarray(reference["shares"]), _FLOOR)
    q = np.maximum(_shares(cur, np.asarray(reference["edges"])), _FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(reference: np.ndarray, live: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `live` against `reference` (see the module doc)."""
    return psi_to(binned(reference, bins), live)


def _reading(value: float) -> str:
    return "major" if value > PSI_MAJOR else "moderate" if value > PSI_MODERATE else "stable"


SCORE = "score"  # the report's row for the model's output
DRIFT_REFERENCE = "drift/reference.json"  # in each training run's artifacts


def comparable(history_days: int) -> frozenset[str]:
    """The features whose drift can start a retraining, for a reference taken
    ``history_days`` after the data's first day: not cumulative (lifetime counts and sums,
    tenure grow with the calendar for every user), and windows that were full then (a
    longer window held only the history there was). The others are reported only."""
    out = set()
    for f in FEATURES:
        cumulative = isinstance(f.formula, Col) or (
            isinstance(f.formula, DaysSince) and f.formula.name == "first_active_date"
        )
        span = max((ws.lookback_days for ws in f.window_sums), default=0)
        if not cumulative and span <= history_days:
            out.add(f.name)
    return frozenset(out)


def reference(
    features: pd.DataFrame,
    scores: np.ndarray,
    history_days: int,
    names: Sequence[str] = FEATURE_NAMES,
) -> dict[str, Any]:
    """What training keeps with a model for drift checks: each feature's and the score's
    distribution, binned, and how many days of history the rows had (jobs.drift compares
    the live population with it)."""
    bins = {n: binned(_values(features, n)) for n in names}
    bins[SCORE] = binned(np.asarray(scores, dtype=np.float64))
    return {"history_days": int(history_days), "bins": bins}


def _psi_table(reference: dict[str, dict[str, Any]], live: dict[str, np.ndarray]) -> pd.DataFrame:
    """For each of ``live``'s columns against its :func:`binned` reference: PSI, its reading,
    the mean and null share on both sides; most drifted first."""
    rows = []
    for name, values in live.items():
        value = psi_to(reference[name], values)
        rows.append(
            {
                "feature": name,
                "psi": value,
                "shift": _reading(value),
                "reference_mean": reference[name]["mean"],
                "live_mean": np.nanmean(values) if np.isfinite(values).any() else np.nan,
                "reference_null": reference[name]["null"],
                "live_null": float(np.isnan(values).mean()) if values.size else 0.0,
            }
        )
    return pd.DataFrame(rows).sort_values("psi", ascending=False).reset_index(drop=True)


def _values(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype=np.float64, na_value=np.nan)


def drift_against(
    ref: dict[str, Any], live: pd.DataFrame, scores: np.ndarray | None
) -> pd.DataFrame:
    """Per feature (and ``score`` when ``scores`` are given): :func:`drift`'s columns against
    a kept reference, and whether the row can trigger a retraining (``comparable``; the
    score always can)."""
    bins = ref["bins"]
    columns = {n: _values(live, n) for n in bins if n != SCORE}
    if scores is not None:
        columns[SCORE] = np.asarray(scores, dtype=np.float64)
    table = _psi_table(bins, columns)
    counts = comparable(int(ref["history_days"])) | {SCORE}
    table.insert(3, "triggers", table["feature"].isin(counts))
    return table


def drift(
    reference: pd.DataFrame,
    live: pd.DataFrame,
    names: Sequence[str] = FEATURE_NAMES,
    bins: int = 10,
) -> pd.DataFrame:
    """Per feature: PSI, its reading, and the mean and null share on both sides; most
    drifted first."""
    return _psi_table(
        {n: binned(_values(reference, n), bins) for n in names},
        {n: _values(live, n) for n in names},
    )


def drift_figure(table: pd.DataFrame, top: int = 20) -> Figure:
    """PSI of the most drifted features, with the 0.1 and 0.25 reading lines."""
    rows = table.head(top).iloc[::-1]
    colours = rows["shift"].map({"stable": "seagreen", "moderate": "orange", "major": "firebrick"})
    fig = Figure(figsize=(8, 0.3 * len(rows) + 1.4))
    ax = fig.subplots()
    ax.barh(rows["feature"], rows["psi"], color=list(colours))
    for t in (PSI_MODERATE, PSI_MAJOR):
        ax.axvline(t, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="PSI (training rows -> live features)", title="Feature drift")
    fig.tight_layout()
    return fig
