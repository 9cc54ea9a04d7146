"""Baselines scored in every run on the same test rows as the model.

- recency: days since the last active day, as a probability through a one-feature
  logistic regression fit on the training rows (so log loss and Brier compare too; the
  ranking is recency's own);
- logistic: a logistic regression on all the model's features (median-imputed with
  missing indicators, signed log1p for the heavy-tailed counts and sums, standardised).

A model that cannot beat these has not learned more than "quiet users leave".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

RECENCY_FEATURE = "days_since_last_event"


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class Baseline:
    """A fitted baseline: `predict(x)` gives churn probabilities from x[columns]."""

    name: str
    columns: tuple[str, ...]
    pipeline: Pipeline

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(x[list(self.columns)])[:, 1], dtype=float)


def _logistic(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=2000)


def fit_recency(x: pd.DataFrame, y: np.ndarray | pd.Series) -> Baseline:
    """Recency-only: P(churn) from log1p(days since last active day); never seen = median."""
    pipe = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        FunctionTransformer(_signed_log1p),
        _logistic(1.0),
    )
    cols = (RECENCY_FEATURE,)
    pipe.fit(x[list(cols)], np.asarray(y))
    return Baseline("recency", cols, pipe)


def fit_logistic(x: pd.DataFrame, y: np.ndarray | pd.Series, features: Sequence[str]) -> Baseline:
    """Logistic regression on the same features as the model."""
    pipe = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        FunctionTransformer(_signed_log1p),
        StandardScaler(),
        _logistic(0.5),
    )
    cols = tuple(features)
    pipe.fit(x[list(cols)], np.asarray(y))
    return Baseline("logistic", cols, pipe)
