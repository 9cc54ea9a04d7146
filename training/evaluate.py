"""Test-set metrics: ranking, probability quality, the top decile, calibration.

Every metric is computed the same way for the model, the baselines and the champion, on
the same rows. Higher is better for roc_auc, pr_auc, precision/lift; lower for log_loss,
brier and ece (expected calibration error).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

HIGHER_IS_BETTER: tuple[str, ...] = ("roc_auc", "pr_auc", "precision_top_decile", "lift_top_decile")
LOWER_IS_BETTER: tuple[str, ...] = ("log_loss", "brier", "ece")
METRICS: tuple[str, ...] = (*HIGHER_IS_BETTER, *LOWER_IS_BETTER)


def top_fraction(y: np.ndarray, p: np.ndarray, fraction: float = 0.1) -> tuple[float, float]:
    """(precision, lift) among the ceil(fraction * n) highest scores.

    Ties at the boundary are broken by row order (a stable sort), so a score with many ties
    (recency in days) is not credited with the best of its tied rows.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    k = max(1, math.ceil(fraction * len(y)))
    top = np.argsort(-p, kind="stable")[:k]
    precision = float(y[top].mean())
    base = float(y.mean())
    return precision, (precision / base if base > 0 else float("nan"))


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Rows per equal-width probability bin: [lo, hi), n, mean predicted, observed churn rate.

    Empty bins are left out.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    edges = np.round(np.linspace(0.0, 1.0, bins + 1), 12)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    frame = pd.DataFrame({"bin": idx, "p": p, "y": y})
    grouped = frame.groupby("bin").agg(
        n=("y", "size"), mean_predicted=("p", "mean"), churn_rate=("y", "mean")
    )
    grouped.insert(0, "hi", edges[grouped.index + 1])
    grouped.insert(0, "lo", edges[grouped.index])
    return grouped.reset_index(drop=True)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Sum over bins of (bin share of rows) * |mean predicted - observed rate|."""
    table = calibration_table(y, p, bins)
    gap = (table["mean_predicted"] - table["churn_rate"]).abs()
    return float((table["n"] * gap).sum() / table["n"].sum())


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """All test metrics for one score (METRICS, plus n and label_rate)."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"the test rows hold only label {y[0] if len(y) else '?'}: no metric is defined"
        )
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    precision, lift = top_fraction(y, p)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "precision_top_decile": precision,
        "lift_top_decile": lift,
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "n": float(len(y)),
        "label_rate": float(y.mean()),
    }


def margins(model: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """model - baseline for the higher-is-better metrics, baseline - model for the others,
    so a positive margin always means the model is better."""
    out = {m: model[m] - baseline[m] for m in HIGHER_IS_BETTER}
    out |= {m: baseline[m] - model[m] for m in LOWER_IS_BETTER}
    return out


def baseline_margins(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"margin_roc_auc_vs_recency": ...} for each baseline in `metrics` (positive: the model
    is better); `metrics` maps scorer -> test metrics and holds "model"."""
    out: dict[str, float] = {}
    for base in ("recency", "logistic"):
        for name, value in margins(metrics["model"], metrics[base]).items():
            out[f"margin_{name}_vs_{base}"] = value
    return out
