"""Training on the real stack: a Delta daily table, Spark, the MLflow server over REST.

The first run goes through the scheduler's tick (lock, version check, train, state), is
registered as `challenger` and, with no champion yet, promoted. A deliberately worse model
(one tree of two leaves, by config) is registered but not promoted.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from datetime import date

import mlflow
import pytest

from features.registry import FEATURE_NAMES
from infra.mlflow_io import pointed_at
from jobs.schedule_train import Trainer
from sources.simulator import SimulationConfig
from training.pipeline import daily_table, train

pytestmark = pytest.mark.integration

SIM = SimulationConfig(n_users=600, days=100, seed=3)


def rest(base: str, endpoint: str, **query: str) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


def get_artifact(base: str, run_id: str, path: str) -> bytes:
    query = urllib.parse.urlencode({"run_uuid": run_id, "path": path})
    with urllib.request.urlopen(f"{base}/get-artifact?{query}", timeout=30) as resp:
        return resp.read()


@pytest.fixture(scope="module")
def cfg(base_config, mlflow_stack, tmp_path_factory, simulated_daily, write_daily_table):
    root = tmp_path_factory.mktemp("training")
    name = f"churn-it-{uuid.uuid4().hex[:8]}"
    c = base_config.model_copy(
        update={
            "storage": base_config.storage.model_copy(update={"warehouse": str(root / "wh")}),
            "mlflow": base_config.mlflow.model_copy(
                update={
                    "tracking_uri": mlflow_stack.mlflow_uri,
                    "experiment": name,
                    "model_name": name,
                }
            ),
            "training": base_config.training.model_copy(
                update={"state_dir": root / "state", "max_cutoffs": 4, "shap_rows": 200}
            ),
        }
    )
    assert write_daily_table(simulated_daily(SIM), daily_table(c)[1]) == 0
    return c


@pytest.fixture(scope="module")
def first(cfg, spark):
    """The scheduler's tick: trains on table version 0 and records it."""
    decision = Trainer(cfg).tick()  # no stop(): the session is the tests' own
    assert decision.action == "trained", decision.reason
    return decision


def test_first_run_is_registered_and_promoted(first, cfg):
    assert first.summary["promoted"] is True
    assert first.summary["model"] == f"{cfg.mlflow.model_name}/1"
    assert first.summary["reason"].startswith("no champion yet; floors pass (roc_auc ")


def test_run_metrics_params_lineage_and_plots_read_over_rest(first, cfg):
    base, run_id = cfg.mlflow.tracking_uri, first.summary["run_id"]
    run = rest(base, "runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert params["training.horizon_days"] == "28"
    assert params["kafka.security.sasl_password_env"] == "CHURN_KAFKA_SASL_PASSWORD"
    assert params["lightgbm.resolved.deterministic"] == "True"
    assert params["data.cutoffs.test"] == first.summary["cutoffs"]["test"][0]
    for scorer in ("test", "recency_test", "logistic_test"):
        for m in (
            "roc_auc",
            "pr_auc",
            "log_loss",
            "brier",
            "precision_top_decile",
            "lift_top_decile",
            "ece",
        ):
            assert 0 <= metrics[f"{scorer}_{m}"] < 10, (scorer, m)
    for base_name in ("recency", "logistic"):
        assert metrics[f"margin_roc_auc_vs_{base_name}"] == pytest.approx(
            metrics["test_roc_auc"] - metrics[f"{base_name}_test_roc_auc"]
        )
    assert metrics["rows_test"] > 100 and 0 < metrics["label_rate_test"] < 1
    assert tags["data.table_path"] == daily_table(cfg)[1]
    assert tags["data.table_version"] == "0"
    assert tags["gate.decision"] == "promoted"
    # Why it ran: the scheduler's tick, on new data (jobs.drift tags its own "drift").
    assert tags["churn.trigger"] == "schedule"
    assert tags["churn.trigger_reason"] == "new data: daily table version 0"
    inputs = run["inputs"]["dataset_inputs"]
    assert sorted(i["tags"][0]["value"] for i in inputs) == ["test", "train", "valid"]
    assert all(daily_table(cfg)[1] in i["dataset"]["source"] for i in inputs)

    listed = rest(base, "artifacts/list", run_id=run_id, path="plots")["files"]
    assert sorted(f["path"] for f in listed) == [
        f"plots/{n}.png" for n in ("calibration", "feature_importance", "pr", "roc", "shap_summary")
    ]
    assert get_artifact(base, run_id, "plots/roc.png")[:4] == b"\x89PNG"
    # The champion's population for drift checks: each feature's and the score's bins.
    reference = json.loads(get_artifact(base, run_id, "drift/reference.json"))
    assert set(reference["bins"]) == {*FEATURE_NAMES, "score"}
    assert sum(reference["bins"]["score"]["shares"]) == pytest.approx(1.0)
    assert (
        reference["history_days"]
        == (
            date.fromisoformat(first.summary["cutoffs"]["test"][0])
            - date.fromisoformat(tags["data.first_day"])
        ).days
    )
    lineage = json.loads(get_artifact(base, run_id, "lineage.json"))
    assert lineage["table_version"] == "0"
    assert lineage["rows"]["test"] == metrics["rows_test"]
    assert lineage["cutoffs"] == first.summary["cutoffs"]


def test_champion_loads_with_the_feature_signature_and_explains(first, cfg):
    name = cfg.mlflow.model_name
    version = rest(cfg.mlflow.tracking_uri, "registered-models/alias", name=name, alias="champion")[
        "model_version"
    ]
    assert version["version"] == "1"
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert tags["gate.decision"] == "promoted" and tags["data.table_version"] == "0"
    assert version["description"].startswith("Promoted to champion: no champion yet")
    uri = f"models:/{name}@champion"
    with pointed_at(cfg.mlflow.tracking_uri):
        inputs = mlflow.models.get_model_info(uri).signature.inputs.to_dict()
        booster = mlflow.lightgbm.load_model(uri)
    assert [(i["name"], i["type"]) for i in inputs] == [(n, "double") for n in FEATURE_NAMES]
    assert booster.feature_name() == FEATURE_NAMES
    import numpy as np

    x = np.full((3, len(FEATURE_NAMES)), np.nan)
    x[:, FEATURE_NAMES.index("days_since_last_event")] = [1, 10, 25]
    assert booster.predict(x, pred_contrib=True).shape == (3, len(FEATURE_NAMES) + 1)


def test_unchanged_table_is_skipped(first, cfg):
    decision = Trainer(cfg).tick()
    assert (decision.action, decision.reason) == (
        "skipped",
        "no new data: table version 0 already trained",
    )


def test_a_worse_model_is_registered_but_not_promoted(first, cfg, spark):
    worse = cfg.training.lightgbm.model_copy(update={"num_boost_round": 1, "num_leaves": 2})
    result = train(
        spark,
        cfg.model_copy(update={"training": cfg.training.model_copy(update={"lightgbm": worse})}),
    )
    assert (result.model_version, result.promoted) == ("2", False)
    assert result.decision.reason.startswith("does not beat champion: roc_auc ")
    assert "vs champion v1 " in result.decision.reason
    assert result.metrics["champion"]["roc_auc"] > result.metrics["model"]["roc_auc"]
    name, base = cfg.mlflow.model_name, cfg.mlflow.tracking_uri
    champion = rest(base, "registered-models/alias", name=name, alias="champion")
    assert champion["model_version"]["version"] == "1"
    v2 = rest(base, "model-versions/get", name=name, version="2")["model_version"]
    assert v2["aliases"] == ["challenger"]
    tags = {t["key"]: t["value"] for t in v2["tags"]}
    assert tags["gate.decision"] == "rejected"
    assert tags["gate.champion_version"] == "1"
    assert v2["description"].startswith("Not promoted: does not beat champion")
    run = rest(base, "runs/get", run_id=result.run_id)["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["champion_test_roc_auc"] == pytest.approx(result.metrics["champion"]["roc_auc"])
