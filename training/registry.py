"""MLflow side of a training run: params from the config, the champion, aliases and tags.

Stages are deprecated in MLflow; the registry uses aliases: each run's version gets
`challenger`, and `champion` moves only when the gate says so (docs/decisions.md, P6).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightgbm as lgb
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from infra.mlflow_io import EXPERIMENT_KIND, pointed_at
from training.gate import GateDecision

CHAMPION = "champion"
CHALLENGER = "challenger"
_PARAM_VALUE_LIMIT = 6000
_BATCH = 100


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"training.lightgbm.num_leaves": "31", ...}; lists as JSON."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= flatten(value, f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:_PARAM_VALUE_LIMIT]
    return out


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    """Log params in batches of MLflow's per-request limit."""
    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[i : i + _BATCH])


@contextmanager
def tracking(uri: str) -> Iterator[MlflowClient]:
    """Point MLflow's fluent API (log_model, log_figure) and its registry at `uri` for the
    block, then put the previous settings back (unset stays unset)."""
    with pointed_at(uri):
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created on first use, tagged as a model-training experiment
    (EXPERIMENT_KIND; an experiment made before the tag gets it now)."""
    key, kind = EXPERIMENT_KIND
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, tags={key: kind})
    if found.tags.get(key) != kind:
        client.set_experiment_tag(found.experiment_id, key, kind)
    return found.experiment_id


def champion_version(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The version behind the `champion` alias, or None when there is none yet."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_booster(model_name: str, version: str) -> lgb.Booster:
    """A registered version's booster (the tracking URI must already be set)."""
    return mlflow.lightgbm.load_model(f"models:/{model_name}/{version}")


def record_decision(
    client: MlflowClient,
    model_name: str,
    version: str,
    decision: GateDecision,
    extra_tags: Mapping[str, str],
) -> None:
    """Tags and description on the version, then `champion` when promoted (last, so a failure
    before it never promotes)."""
    for key, value in {**extra_tags, **decision.tags()}.items():
        client.set_model_version_tag(model_name, version, key, value)
    verdict = "Promoted to champion" if decision.promote else "Not promoted"
    client.update_model_version(model_name, version, description=f"{verdict}: {decision.reason}")
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)


def last_trained_version(client: MlflowClient, experiment: str, table_path: str) -> int | None:
    """The daily-table version of the newest finished training run on `table_path`, if any."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    quoted = table_path.replace("'", "\\'")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"attributes.status = 'FINISHED' and tags.`data.table_path` = '{quoted}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return int(runs[0].data.tags["data.table_version"]) if runs else None
