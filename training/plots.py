"""Figures logged with each run: ROC, precision-recall, calibration, importance, SHAP summary.

Each function returns a matplotlib Figure built without pyplot: no backend is selected, no
global figure registry is touched, nothing needs closing. The SHAP summary uses LightGBM's own TreeSHAP (`pred_contrib=True`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from training.evaluate import calibration_table


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def roc_figure(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> Figure:
    fig, ax = _figure(5.5, 5)
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def pr_figure(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> Figure:
    fig, ax = _figure(5.5, 5)
    for name, p in scores.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name)
    ax.axhline(float(np.mean(y)), color="grey", linestyle=":", linewidth=1, label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)", ylim=(0, 1.02))
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def calibration_figure(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> Figure:
    fig, ax = _figure(5.5, 5)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for name, p in scores.items():
        t = calibration_table(y, p)
        ax.plot(t["mean_predicted"], t["churn_rate"], marker="o", label=name)
    ax.set(xlabel="mean predicted churn", ylabel="observed churn rate", title="Calibration (test)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def importance_figure(importance: pd.DataFrame, top: int = 25) -> Figure:
    """Horizontal bars of total gain for the `top` features (from model.feature_importance)."""
    rows = importance.head(top).iloc[::-1]
    fig, ax = _figure(7, 0.28 * len(rows) + 1.2)
    ax.barh(rows["feature"], rows["gain"])
    ax.set(xlabel="total gain", title=f"Feature importance (top {len(rows)})")
    fig.tight_layout()
    return fig


def shap_summary_figure(contrib: np.ndarray, x: pd.DataFrame, top: int = 20) -> Figure:
    """Beeswarm-style summary: one dot per row and feature, x = contribution to the log-odds,
    colour = the feature's value rank within the sample (grey when missing)."""
    values = contrib[:, : x.shape[1]]  # the last column is the expected value
    order = np.argsort(-np.abs(values).mean(axis=0), kind="stable")[:top][::-1]
    rng = np.random.default_rng(0)
    fig, ax = _figure(7.5, 0.3 * len(order) + 1.4)
    for row, j in enumerate(order):
        col = x.iloc[:, j]
        rank = col.rank(pct=True).to_numpy()
        jitter = rng.uniform(-0.3, 0.3, len(col))
        missing = np.isnan(rank)
        ax.scatter(values[missing, j], row + jitter[missing], s=4, color="lightgrey")
        points = ax.scatter(
            values[~missing, j],
            row + jitter[~missing],
            s=4,
            c=rank[~missing],
            cmap="coolwarm",
            vmin=0,
            vmax=1,
        )
    ax.set_yticks(range(len(order)), [x.columns[j] for j in order])
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set(xlabel="contribution to churn log-odds (TreeSHAP)", title="SHAP summary (test sample)")
    if len(order):
        fig.colorbar(points, ax=ax, label="feature value (rank)")
    fig.tight_layout()
    return fig
