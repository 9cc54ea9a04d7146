"""Log a fitted model as one MLflow run, register it, and apply the gate.

Layout of a run (docs/training.md has the full table):
- params: the resolved config (Config.redacted(), flattened), the LightGBM params actually
  used (`lightgbm.resolved.*`), the cutoffs per split (`data.cutoffs.*`);
- tags: lineage (`data.table_path`, `data.table_version`, ...) and the gate's decision;
- metrics: `test_*` (model), `valid_*`, `recency_test_*`, `logistic_test_*`,
  `margin_*_vs_*`, `champion_test_*`, `gate_promoted`, row counts and label rates per split;
- inputs: one dataset per split, its source the Delta table at the version read;
- artifacts: plots/*.png, tables (importance, SHAP, calibration), lineage.json,
  metrics.json, config.json; the model (LightGBM flavour, signature = FEATURE_NAMES).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.data.delta_dataset_source import DeltaDatasetSource
from mlflow.data.pandas_dataset import PandasDataset, from_pandas
from mlflow.models import infer_signature
from mlflow.types import ColSpec, Schema

from features.registry import FEATURE_NAMES
from infra.config import Config
from scoring.monitor import DRIFT_REFERENCE, reference
from training import plots
from training.evaluate import baseline_margins, binary_metrics, calibration_table
from training.gate import GateDecision, decide
from training.model import feature_importance, predict, shap_sample
from training.progress import say
from training.registry import (
    CHALLENGER,
    champion_version,
    experiment_id,
    flatten,
    load_booster,
    log_params,
    record_decision,
    tracking,
)
from training.result import MANUAL, REALISED, Fitted, TrainingResult, Trigger
from training.spine import LABEL
from training.split import SPLITS, CutoffSplit

_PIP = [
    f"mlflow=={mlflow.__version__}",
    f"lightgbm=={lgb.__version__}",
    f"numpy=={np.__version__}",
    f"pandas=={pd.__version__}",
]


def _dates(days: tuple[Any, ...]) -> str:
    return ",".join(str(d) for d in days)


def _metrics(fitted: Fitted) -> dict[str, float]:
    out = {f"test_{k}": v for k, v in fitted.metrics["model"].items()}
    out |= {f"valid_{k}": v for k, v in fitted.valid_metrics.items()}
    for base in ("recency", "logistic"):
        out |= {f"{base}_test_{k}": v for k, v in fitted.metrics[base].items()}
    out |= baseline_margins(fitted.metrics)
    for s, part in fitted.parts.items():
        out[f"rows_{s}"] = float(len(part))
        out[f"label_rate_{s}"] = float(part[LABEL].mean())
    out["best_iteration"] = float(fitted.booster.best_iteration or fitted.booster.num_trees())
    out["scale_pos_weight"] = float(fitted.params["scale_pos_weight"])
    return {k: v for k, v in out.items() if np.isfinite(v)}


def _log_artifacts(fitted: Fitted, shap_rows: int, seed: int) -> None:
    test = fitted.parts["test"]
    y = test[LABEL].to_numpy()
    scores = fitted.test_scores
    for name, fig in (
        ("roc", plots.roc_figure(y, scores)),
        ("pr", plots.pr_figure(y, scores)),
        ("calibration", plots.calibration_figure(y, scores)),
    ):
        mlflow.log_figure(fig, f"plots/{name}.png")
    importance = feature_importance(fitted.booster)
    mlflow.log_figure(plots.importance_figure(importance), "plots/feature_importance.png")
    mlflow.log_text(importance.to_csv(index=False), "tables/feature_importance.csv")
    contrib, sample = shap_sample(fitted.booster, test, shap_rows, seed)
    mlflow.log_figure(plots.shap_summary_figure(contrib, sample), "plots/shap_summary.png")
    mean_abs = pd.DataFrame(
        {"feature": FEATURE_NAMES, "mean_abs_contribution": np.abs(contrib[:, :-1]).mean(axis=0)}
    ).sort_values("mean_abs_contribution", ascending=False)
    mlflow.log_text(mean_abs.to_csv(index=False), "tables/shap_mean_abs.csv")
    calib = pd.concat([calibration_table(y, p).assign(scorer=name) for name, p in scores.items()])
    mlflow.log_text(calib.to_csv(index=False), "tables/calibration.csv")


def dataset_schema(frame: pd.DataFrame) -> Schema:
    """The schema MLflow infers for ``frame``, at pandas speed (docs/decisions.md, decision 46).

    MLflow types each column from its dtype and values, then marks it ``required`` only if
    no value is missing, testing every value in a Python loop: 4.7 s of a 9 s MLflow stage
    for the demo's three splits. Here the types come from MLflow's own inference on a few
    rows and ``required`` from one vectorised ``isna`` per column.
    """
    sample = infer_signature(frame.head(100)).inputs
    return Schema(
        [
            ColSpec(col.type, col.name, required=not bool(frame[col.name].isna().any()))
            for col in sample.inputs
        ]
    )


def split_dataset(frame: pd.DataFrame, lineage: Mapping[str, Any], split: str) -> PandasDataset:
    """One split's rows as an MLflow dataset: its source the Delta table at the version read."""
    source = DeltaDatasetSource(
        path=lineage["table_path"], delta_table_version=int(lineage["table_version"])
    )
    frame = frame.assign(cutoff=pd.to_datetime(frame["cutoff"]))
    with warnings.catch_warnings():
        # MLflow's hint about integer model inputs; here only the 0/1 label is an integer.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        ds = from_pandas(
            frame,
            source=source,
            targets=LABEL,
            name=f"user_activity_daily@v{lineage['table_version']}:{split}",
        )
        # PandasDataset.schema is a cached property: this value is the one it would cache.
        ds.schema = dataset_schema(frame)
    return ds


def _log_inputs(parts: Mapping[str, pd.DataFrame], lineage: Mapping[str, Any]) -> None:
    for s in SPLITS:
        mlflow.log_input(split_dataset(parts[s], lineage, s), context=s)


def _score_champion(
    name: str, version: str, test: pd.DataFrame
) -> tuple[dict[str, float] | None, str]:
    """Champion metrics on the challenger's test rows, or None and why it cannot be scored."""
    try:
        booster = load_booster(name, version)
    except Exception as exc:  # any load failure must stop a promotion, not crash the run
        raise RuntimeError(f"champion v{version} could not be loaded: {exc}") from exc
    missing = sorted(set(booster.feature_name()) - set(FEATURE_NAMES))
    if missing:
        return (
            None,
            f"champion v{version} reads features no longer produced ({', '.join(missing[:5])})",
        )
    return binary_metrics(test[LABEL].to_numpy(), predict(booster, test)), ""


def log_run(
    cfg: Config,
    fitted: Fitted,
    split: CutoffSplit,
    lineage: Mapping[str, Any],
    trigger: Trigger = MANUAL,
) -> TrainingResult:
    """One MLflow run for `fitted`; registers the model, sets `challenger`, gates `champion`."""
    t, name = cfg.training, cfg.mlflow.model_name
    version_read = int(lineage["table_version"])
    lineage_tags = {
        "data.table_path": str(lineage["table_path"]),
        "data.table_version": str(version_read),
        "data.test_cutoffs": _dates(split.test),
    }
    with tracking(cfg.mlflow.tracking_uri) as client:
        exp_id = experiment_id(client, cfg.mlflow.experiment)
        champ = champion_version(client, name)
        run_name = f"train@v{version_read}-test-{split.test[-1]}"
        with mlflow.start_run(
            experiment_id=exp_id, run_name=run_name, nested=mlflow.active_run() is not None
        ) as run:
            run_id = run.info.run_id
            params = flatten(cfg.redacted())
            params |= {f"lightgbm.resolved.{k}": str(v) for k, v in fitted.params.items()}
            params |= {f"data.cutoffs.{s}": _dates(split.of(s)) for s in SPLITS}
            params["data.cutoffs.purged"] = _dates(split.purged)
            log_params(client, run_id, params)
            mlflow.set_tags(
                {
                    **lineage_tags,
                    "data.first_day": str(lineage["first_day"]),
                    "data.data_end": str(lineage["data_end"]),
                    **trigger.tags(),
                }
            )
            mlflow.log_metrics(_metrics(fitted))
            mlflow.log_dict(
                {k: str(v) for k, v in lineage.items()}
                | {
                    "cutoffs": {s: [str(d) for d in split.of(s)] for s in SPLITS},
                    "rows": {s: len(p) for s, p in fitted.parts.items()},
                    "label_rate": {s: float(p[LABEL].mean()) for s, p in fitted.parts.items()},
                },
                "lineage.json",
            )
            mlflow.log_dict(fitted.metrics, "metrics.json")
            mlflow.log_dict(cfg.redacted(), "config.json")
            _log_inputs(fitted.parts, lineage)
            _log_artifacts(fitted, t.shap_rows, t.lightgbm.seed)
            # The population the model is judged on: the newest cutoff's rows and their
            # scores, the reference jobs.drift compares live features and scores with.
            history = (split.test[-1] - lineage["first_day"]).days
            test_rows = fitted.parts["test"][FEATURE_NAMES]
            mlflow.log_dict(
                reference(test_rows, fitted.test_scores["model"], history), DRIFT_REFERENCE
            )

            test = fitted.parts["test"]
            x_example = test[FEATURE_NAMES].head(5)
            info = mlflow.lightgbm.log_model(
                fitted.booster,
                name="model",
                signature=infer_signature(x_example, predict(fitted.booster, x_example)),
                input_example=x_example,
                registered_model_name=name,
                pip_requirements=_PIP,
            )
            version = str(info.registered_model_version)
            client.set_registered_model_alias(name, CHALLENGER, version)
            say(f"registered {name} v{version} as {CHALLENGER}")

            metrics = dict(fitted.metrics)
            decision = _gate(cfg, fitted, champ.version if champ else None, test, metrics, trigger)
            if "champion" in metrics:
                mlflow.log_metrics(
                    {f"champion_test_{k}": v for k, v in metrics["champion"].items()}
                )
            mlflow.set_tags(decision.tags())
            mlflow.log_metric("gate_promoted", float(decision.promote))
            record_decision(client, name, version, decision, lineage_tags | {"run_id": run_id})
    return TrainingResult(
        run_id=run_id,
        experiment_id=exp_id,
        model_name=name,
        model_version=version,
        decision=decision,
        metrics=metrics,
        table_path=str(lineage["table_path"]),
        table_version=version_read,
        split=split,
        rows={s: len(p) for s, p in fitted.parts.items()},
    )


def _gate(
    cfg: Config,
    fitted: Fitted,
    champion: str | None,
    test: pd.DataFrame,
    metrics: dict[str, dict[str, float]],
    trigger: Trigger = MANUAL,
) -> GateDecision:
    """Score the champion on the same test rows (adds metrics["champion"]) and decide; a run
    started by the champion's realised performance (jobs.realised) says so in the decision."""
    g = cfg.training.gate
    model = fitted.metrics["model"]
    floors = {str(k): v for k, v in g.floors.items()}

    def rule(champ: dict[str, float] | None, version: str | None) -> GateDecision:
        return decide(
            model,
            champ,
            metric=g.metric,
            min_improvement=g.min_improvement,
            floors=floors,
            champion_version=version,
            champion_failing=trigger.reason if trigger.kind == REALISED else "",
        )

    if champion is None:
        return rule(None, None)
    try:
        champ_metrics, why_not = _score_champion(cfg.mlflow.model_name, champion, test)
    except RuntimeError as exc:
        return GateDecision(False, str(exc), g.metric, model[g.metric], None, champion)
    if champ_metrics is None:
        d = rule(None, None)
        reason = f"{why_not}; {d.reason}"
        return GateDecision(d.promote, reason, d.metric, d.challenger, None, champion)
    metrics["champion"] = champ_metrics
    return rule(champ_metrics, champion)
