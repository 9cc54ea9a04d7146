"""Tiny LightGBM models on synthetic feature vectors, for the scorer's tests (not a test module).

Two label rules make two distinguishable versions: ``recency`` (churned when
days_since_last_event > 7) and ``sessions`` (churned when n_session_start_30d < 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.registry import FEATURE_NAMES
from infra.mlflow_io import pointed_at
from scoring.model import LOOKBACK_PARAM
from scoring.score import ScoringModel

RULES = {
    "recency": lambda x: x["days_since_last_event"] > 7,
    "sessions": lambda x: x["n_session_start_30d"] < 3,
}


def vectors(n: int, seed: int = 0, names: Sequence[str] = FEATURE_NAMES) -> pd.DataFrame:
    """Synthetic feature vectors: small counts and recencies, 5% missing."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 20, size=(n, len(names))).astype(np.float64)
    x[rng.random(x.shape) < 0.05] = np.nan
    return pd.DataFrame(x, columns=list(names))


def scoring_input(
    x: pd.DataFrame,
    as_of: date = date(2024, 3, 6),
    version: int = 3,
    committed_at: datetime = datetime(2024, 3, 6, 1, 2, 3),
) -> pd.DataFrame:
    """score_frame's input: lineage columns in front of the vectors."""
    lineage = pd.DataFrame(
        {
            "user_id": [f"u{i:03d}" for i in range(len(x))],
            "as_of": [as_of] * len(x),
            "features_version": version,
            "features_committed_at": pd.Timestamp(committed_at),
        }
    )
    return pd.concat([lineage, x.reset_index(drop=True)], axis=1)


def train(rule: str = "recency", n: int = 600, trees: int = 20, seed: int = 0, names=None):
    """(booster, X, predictions) for a binary model of ``rule`` on ``names`` columns."""
    names = list(names or FEATURE_NAMES)
    x = vectors(n, seed, names)
    y = RULES[rule](x.reindex(columns=FEATURE_NAMES)).astype(int)
    # Label noise keeps the probabilities off 0 and 1, so every risk band occurs.
    flip = np.random.default_rng(seed + 1).random(n) < 0.2
    y = np.where(flip, 1 - y, y)
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "seed": seed}
    booster = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=trees)
    return booster, x, booster.predict(x)


def model(rule: str = "recency", version: int = 1, name: str = "test-model") -> ScoringModel:
    return ScoringModel(name, version, train(rule)[0], lookback_days=28)


def tracking(uri: str):
    """Point MLflow's fluent API at ``uri`` for the block, then restore the previous URIs."""
    return pointed_at(uri)


def register(
    uri: str, name: str, rule: str = "recency", names=None, lookback_days: int | None = 28
) -> tuple[int, str]:
    """Train, log and register a version of ``name`` (its run records ``lookback_days`` as
    training does, unless None); returns (version, logged model id)."""
    import mlflow
    from mlflow.models import infer_signature

    booster, x, preds = train(rule, names=names)
    with tracking(uri):
        mlflow.set_experiment("scoring-tests")
        with mlflow.start_run():
            if lookback_days is not None:
                mlflow.log_param(LOOKBACK_PARAM, lookback_days)
            info = mlflow.lightgbm.log_model(
                booster,
                name="model",
                signature=infer_signature(x, preds),
                registered_model_name=name,
            )
    return int(info.registered_model_version), info.model_id
