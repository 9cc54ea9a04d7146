"""What a fit produces (Fitted, logged by training.tracking) and what a run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.gate import GateDecision
from training.split import SPLITS, CutoffSplit


@dataclass(frozen=True)
class Fitted:
    """The booster, its resolved params, the split rows, and test scores and metrics per
    scorer ("model", "recency", "logistic")."""

    booster: lgb.Booster
    params: dict[str, Any]
    parts: dict[str, pd.DataFrame]
    test_scores: dict[str, np.ndarray]
    metrics: dict[str, dict[str, float]]
    valid_metrics: dict[str, float]


@dataclass(frozen=True)
class TrainingResult:
    """One run's outcome; `summary()` is JSON-friendly (job output, the demo's summary)."""

    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    decision: GateDecision
    # scorer ("model", "recency", "logistic", "champion" when one was scored) -> test metrics
    metrics: dict[str, dict[str, float]]
    table_path: str
    table_version: int
    split: CutoffSplit
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def promoted(self) -> bool:
        return self.decision.promote

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": f"{self.model_name}/{self.model_version}",
            "promoted": self.promoted,
            "reason": self.decision.reason,
            "test_metrics": self.metrics,
            "table": f"{self.table_path}@v{self.table_version}",
            "cutoffs": {s: [str(d) for d in self.split.of(s)] for s in SPLITS},
            "rows": self.rows,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class Trigger:
    """Why a training run started, tagged on its MLflow run (``churn.trigger``, ``.reason``):
    ``manual`` (jobs.train), ``schedule`` (new data), ``drift`` (jobs.drift), ``realised``
    (jobs.realised: the champion's realised ROC-AUC fell under the gate's floor; the gate
    says so in its decision)."""

    kind: str = "manual"
    reason: str = ""

    def tags(self) -> dict[str, str]:
        return {"churn.trigger": self.kind, "churn.trigger_reason": self.reason or self.kind}


MANUAL = Trigger()
REALISED = "realised"
