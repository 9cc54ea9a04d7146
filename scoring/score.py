"""Score feature vectors with a LightGBM booster: pandas in, pandas out, no Spark, no I/O.

The stream (per micro-batch, in the driver) and the batch job call the same
:func:`score_frame`, so the same user, features and model give the same score, band,
reasons and record id on both paths.

Input (:data:`INPUT_COLUMNS`): ``user_id``, ``as_of``, ``features_version`` (the
``user_features`` table version the vector was read at), ``features_committed_at`` (that
commit's timestamp) and the model's features (``FEATURE_NAMES``, float64, NaN = missing).

Who is scored: the population the model was trained on (:func:`in_population`). A user who
falls out of it gets one ``lapsed`` record (:func:`lapse_frame`) and no score until they
return (docs/decisions.md, decision 67).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.registry import FEATURE_NAMES

N_REASONS = 3
BANDS: tuple[str, ...] = ("low", "medium", "high")
# A record's status: a score, or the one record that says a user left the scored population.
SCORED, LAPSED = "scored", "lapsed"
LINEAGE_COLUMNS: tuple[str, ...] = ("user_id", "as_of", "features_version", "features_committed_at")
INPUT_COLUMNS: tuple[str, ...] = (*LINEAGE_COLUMNS, *FEATURE_NAMES)
# What score_frame returns, in order (the sink adds writer and batch_id).
OUTPUT_COLUMNS: tuple[str, ...] = (
    "record_id",
    "user_id",
    "score",
    "risk_band",
    "status",
    "model_name",
    "model_version",
    "features_as_of",
    "features_version",
    "scored_at",
    "reasons",
)


@dataclass(frozen=True)
class ScoringModel:
    """A registered model version, loaded: what every score names as its producer."""

    name: str
    version: int
    booster: lgb.Booster
    # Eligible = active in the last lookback_days (training.spine); None: everyone is scored.
    lookback_days: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True)
class ScoringRules:
    """Band thresholds and which bands carry reasons (plain values; jobs read them from config)."""

    band_medium: float = 0.3
    band_high: float = 0.6
    reasons_for_bands: tuple[str, ...] = ("medium", "high")

    def __post_init__(self) -> None:
        if not 0 < self.band_medium < self.band_high < 1:
            raise ValueError(f"need 0 < band_medium < band_high < 1, got {self}")
        unknown = set(self.reasons_for_bands) - set(BANDS)
        if unknown:
            raise ValueError(f"unknown bands in reasons_for_bands: {sorted(unknown)}")

    def bands(self, scores: np.ndarray) -> np.ndarray:
        """score >= band_high: high; >= band_medium: medium; else low."""
        return np.where(
            scores >= self.band_high, "high", np.where(scores >= self.band_medium, "medium", "low")
        )


def in_population(features: pd.DataFrame, lookback_days: int | None) -> np.ndarray:
    """Which rows the model applies to: users active in the ``lookback_days`` before their
    ``as_of``, training.spine's eligibility rule (``days_since_last_event`` counts from
    ``as_of``: active the day before = 1). A user never active has a null there: not eligible."""
    if lookback_days is None:
        return np.ones(len(features), dtype=bool)
    days = features["days_since_last_event"].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(days <= lookback_days)


def feature_matrix(features: pd.DataFrame, names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    """The model's input as a C-ordered float64 matrix, columns in ``names`` order."""
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise KeyError(f"feature columns missing from the input: {missing[:5]} ({len(missing)})")
    x = features[list(names)].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.ascontiguousarray(x)


def record_ids(
    user_ids: Iterable[str], as_of: Iterable[str], model: ScoringModel, x: np.ndarray
) -> list[str]:
    """Deterministic id per score: sha256 of (user, as_of, model name, version, feature values).

    The feature values, not the table version, go into the hash, so the stream and the batch
    job give the same id to the same score, and consumers can deduplicate across both.
    """
    # One bit pattern per value: every NaN the same, -0.0 as 0.0.
    canon = np.where(np.isnan(x), np.nan, x) + 0.0
    prefix = f"{model.name}\x1f{model.version}\x1f"
    return [
        hashlib.sha256(f"{prefix}{u}\x1f{d}\x1f".encode() + row.tobytes()).hexdigest()[:32]
        for u, d, row in zip(user_ids, as_of, canon, strict=True)
    ]


def top_reasons(
    contrib: np.ndarray, x: np.ndarray, names: Sequence[str], n: int = N_REASONS
) -> list[list[dict[str, Any]]]:
    """Per row, the ``n`` features pushing hardest towards churn (largest positive SHAP value).

    ``contrib`` is LightGBM's ``pred_contrib`` output (one column per feature, then the
    bias). Features that lower the score are never reasons; a row may have fewer than n.
    """
    values = contrib[:, : len(names)]
    order = np.argsort(-values, axis=1, kind="stable")[:, :n]
    out: list[list[dict[str, Any]]] = []
    for i, cols in enumerate(order):
        row = []
        for j in cols:
            c = float(values[i, j])
            if c <= 0:
                break
            v = float(x[i, j])
            row.append(
                {"feature": names[j], "value": None if np.isnan(v) else v, "contribution": c}
            )
        out.append(row)
    return out


def score_frame(
    model: ScoringModel,
    features: pd.DataFrame,
    rules: ScoringRules,
    names: Sequence[str] = FEATURE_NAMES,
) -> pd.DataFrame:
    """Churn probability, risk band, reasons and lineage for each row of ``features``.

    ``reasons`` is computed (exact TreeSHAP) only for rows whose band is in
    ``rules.reasons_for_bands``, and is None elsewhere: it costs about 300 predictions a
    row. ``scored_at`` is the feature commit's timestamp, so a replay gives equal rows.
    """
    if features.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS})
    x = feature_matrix(features, names)
    scores = np.asarray(model.booster.predict(x), dtype=np.float64)
    bands = rules.bands(scores)
    reasons: list[list[dict[str, Any]] | None] = [None] * len(x)
    explain = np.flatnonzero(np.isin(bands, list(rules.reasons_for_bands)))
    if explain.size:
        contrib = np.asarray(model.booster.predict(x[explain], pred_contrib=True))
        for i, r in zip(explain, top_reasons(contrib, x[explain], names), strict=True):
            reasons[i] = r
    as_of = pd.to_datetime(features["as_of"]).dt.strftime("%Y-%m-%d")
    return pd.DataFrame(
        {
            "record_id": record_ids(features["user_id"], as_of, model, x),
            "user_id": features["user_id"].to_numpy(),
            "score": scores,
            "risk_band": bands,
            "status": SCORED,
            "model_name": model.name,
            "model_version": np.int64(model.version),
            "features_as_of": pd.to_datetime(features["as_of"]).dt.date.to_numpy(),
            "features_version": features["features_version"].to_numpy(dtype=np.int64),
            "scored_at": pd.to_datetime(features["features_committed_at"]).to_numpy(),
            "reasons": reasons,
        },
        columns=list(OUTPUT_COLUMNS),
    )


def lapse_frame(model: ScoringModel, features: pd.DataFrame) -> pd.DataFrame:
    """The ``lapsed`` record of each row's user (score_frame's columns; no score, band or
    reasons): they left ``model``'s population as of these features."""
    n = len(features)
    as_of = pd.to_datetime(features["as_of"])
    prefix = f"{model.name}\x1f{model.version}\x1f{LAPSED}\x1f"
    ids = [
        hashlib.sha256(f"{prefix}{u}\x1f{d}".encode()).hexdigest()[:32]
        for u, d in zip(features["user_id"], as_of.dt.strftime("%Y-%m-%d"), strict=True)
    ]
    return pd.DataFrame(
        {
            "record_id": ids,
            "user_id": features["user_id"].to_numpy(),
            "score": np.full(n, np.nan),
            "risk_band": [None] * n,
            "status": LAPSED,
            "model_name": model.name,
            "model_version": np.int64(model.version),
            "features_as_of": as_of.dt.date.to_numpy(),
            "features_version": features["features_version"].to_numpy(dtype=np.int64),
            "scored_at": pd.to_datetime(features["features_committed_at"]).to_numpy(),
            "reasons": [None] * n,
        },
        columns=list(OUTPUT_COLUMNS),
    )


def emitted(
    scored: pd.DataFrame, previous: pd.DataFrame, *, policy: str, min_delta: float
) -> pd.Series:
    """Which scores to emit: all (``every``), or (``changed``) a user's first score, a move of
    at least ``min_delta`` since their last emitted score, or a change of band.

    ``previous`` holds each user's last emitted ``score`` and ``risk_band`` (any order, users
    without one absent).
    """
    if policy == "every":
        return pd.Series(True, index=scored.index)
    if policy != "changed":
        raise ValueError(f"unknown emission policy {policy!r}; use 'every' or 'changed'")
    prev = previous.set_index("user_id")[["score", "risk_band"]]
    joined = scored[["user_id", "score", "risk_band"]].join(
        prev, on="user_id", rsuffix="_prev", how="left"
    )
    first = joined["score_prev"].isna()
    # A tolerance so that a move of exactly min_delta counts despite float rounding.
    moved = (joined["score"] - joined["score_prev"]).abs() >= min_delta - 1e-12
    crossed = joined["risk_band"] != joined["risk_band_prev"]
    return first | moved | crossed
