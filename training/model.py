"""LightGBM fit: early stopping on the out-of-time validation set, deterministic for a seed.

Class imbalance: churned rows get `scale_pos_weight` (default n_not_churned / n_churned of
the training rows), chosen over `is_unbalance` because the weight is explicit, logged as a
param and reproducible. A positive weight w lifts the booster's log-odds (by log(w) at the
optimum; measured on simulator data, subtracting log(w) left the mean prediction at 0.118
for a churn rate of 0.137). So after the fit one constant is solved on the training rows
that brings the mean predicted probability back to their churn rate, and it is subtracted
from every leaf of the first tree: every row's raw score moves by the same amount, the
ranking is untouched, and the saved booster predicts probabilities on the real base rate
(calibration, log loss, Brier and the scorer's risk bands need no extra step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit

from features.registry import FEATURE_NAMES

# Fixed by design, not config: determinism and the objective are part of the contract.
FIXED_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}
# Config keys that are not LightGBM params.
_NOT_PARAMS = ("num_boost_round", "early_stopping_rounds")


def positive_weight(y: np.ndarray | pd.Series, configured: float | None) -> float:
    """The churned-row weight: configured, or n_not_churned / n_churned of `y`."""
    if configured is not None:
        return float(configured)
    y = np.asarray(y)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError(
            f"training labels are all {int(y[0]) if len(y) else '?'}: nothing to learn"
        )
    return (len(y) - n_pos) / n_pos


def lightgbm_params(hyper: Mapping[str, Any], pos_weight: float) -> dict[str, Any]:
    """LightGBM params from the config's hyperparameters plus the fixed ones."""
    params = {k: v for k, v in hyper.items() if k not in _NOT_PARAMS}
    params["scale_pos_weight"] = pos_weight
    return {**params, **FIXED_PARAMS}


def fit_lightgbm(
    train_x: pd.DataFrame,
    train_y: np.ndarray | pd.Series,
    valid_x: pd.DataFrame,
    valid_y: np.ndarray | pd.Series,
    params: Mapping[str, Any],
    *,
    num_boost_round: int,
    early_stopping_rounds: int,
) -> lgb.Booster:
    """Train with early stopping on (valid_x, valid_y); return the booster cut at its best
    iteration, with the class-weight shift removed (module docstring)."""
    train = lgb.Dataset(train_x, label=np.asarray(train_y), free_raw_data=True)
    valid = lgb.Dataset(valid_x, label=np.asarray(valid_y), reference=train)
    booster = lgb.train(
        dict(params),
        train,
        num_boost_round=num_boost_round,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    final = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    final.best_iteration = best
    if float(params.get("scale_pos_weight", 1.0)) != 1.0:
        raw = np.asarray(final.predict(train_x, raw_score=True), dtype=float)
        final = shift_raw_score(final, intercept_shift(raw, np.asarray(train_y, dtype=float)))
    return final


def intercept_shift(raw: np.ndarray, y: np.ndarray) -> float:
    """The constant b with mean(sigmoid(raw - b)) == mean(y), by bisection (monotone in b)."""
    target = float(np.mean(y))
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.mean(expit(raw - mid)) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def shift_raw_score(booster: lgb.Booster, shift: float) -> lgb.Booster:
    """A copy of `booster` whose raw score is lower by `shift` for every row: each row falls
    in exactly one leaf of the first tree, so shifting all of that tree's leaves does it."""
    out = lgb.Booster(model_str=booster.model_to_string())
    for leaf in range(out.dump_model()["tree_info"][0]["num_leaves"]):
        out.set_leaf_output(0, leaf, out.get_leaf_output(0, leaf) - shift)
    # Re-read so model_to_string / save_model carry the shifted leaves.
    shifted = lgb.Booster(model_str=out.model_to_string())
    shifted.best_iteration = booster.best_iteration
    return shifted


def predict(booster: lgb.Booster, x: pd.DataFrame) -> np.ndarray:
    """Churn probabilities for the rows of x (columns in the booster's feature order)."""
    return np.asarray(booster.predict(x[booster.feature_name()]), dtype=float)


def feature_importance(booster: lgb.Booster) -> pd.DataFrame:
    """Gain and split importance per feature, highest gain first."""
    return (
        pd.DataFrame(
            {
                "feature": booster.feature_name(),
                "gain": booster.feature_importance("gain"),
                "splits": booster.feature_importance("split"),
            }
        )
        .sort_values(["gain", "feature"], ascending=[False, True])
        .reset_index(drop=True)
    )


def shap_sample(
    booster: lgb.Booster, rows: pd.DataFrame, n: int, seed: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """(TreeSHAP contributions, the rows explained) for a sample of up to `n` rows; the
    last contribution column is the expected value."""
    sample = rows.sample(n=min(n, len(rows)), random_state=seed)[FEATURE_NAMES]
    return np.asarray(booster.predict(sample, pred_contrib=True)), sample
