"""`make demo`'s job on the test stack, small: its summary, and what MLflow's REST API shows."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid

import pytest
import yaml

from jobs import demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def rest(base: str, path: str, **params: str) -> dict:
    url = f"{base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


def test_demo_runs_end_to_end_and_mlflow_shows_its_run_model_and_champion(
    kafka_stack, mlflow_stack, base_config, tmp_path
):
    tag = uuid.uuid4().hex[:6]
    cfg = base_config.model_copy(
        update={
            "kafka": base_config.kafka.model_copy(
                update={
                    "topics": base_config.kafka.topics.model_copy(
                        update={
                            "events": f"demo-ev-{tag}",
                            "dlq": f"demo-dlq-{tag}",
                            "scores": f"demo-sc-{tag}",
                        }
                    )
                }
            ),
            "storage": base_config.storage.model_copy(
                update={"warehouse": str(tmp_path / "wh"), "checkpoints": str(tmp_path / "chk")}
            ),
            "mlflow": base_config.mlflow.model_copy(
                update={"experiment": f"demo-{tag}", "model_name": f"demo-model-{tag}"}
            ),
            "training": base_config.training.model_copy(
                update={"state_dir": tmp_path / "training"}
            ),
        }
    )
    config_path = tmp_path / "demo.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    summary_path = tmp_path / "summary.json"

    demo.main(
        [
            "--config",
            str(config_path),
            "--users",
            "300",
            "--days",
            "90",
            "--bad-every",
            "500",
            "--summary",
            str(summary_path),
        ],
        stop_spark=False,
    )

    s = json.loads(summary_path.read_text())
    ev = s["events"]
    assert ev["processed"] == ev["produced"] == ev["valid"] + ev["quarantined"]
    assert ev["quarantined"] == ev["produced"] // 501 > 0  # one malformed record per 500 events
    assert s["users"] == s["feature_rows"] > 0
    assert s["scores"]["users_scored"] == s["users"]
    assert sum(s["scores"]["latest_by_band"].values()) == s["users"]
    assert s["training"]["promoted"] is True

    uri = mlflow_stack.mlflow_uri
    exp = rest(uri, "experiments/get-by-name", experiment_name=f"demo-{tag}")["experiment"]
    runs = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"{uri}/api/2.0/mlflow/runs/search",
                method="POST",
                data=json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode(),
                headers={"Content-Type": "application/json"},
            ),
            timeout=30,
        ).read()
    )["runs"]
    assert [r["info"]["run_id"] for r in runs] == [s["training"]["run_id"]]
    metrics = {m["key"] for m in runs[0]["data"]["metrics"]}
    assert {
        "test_roc_auc",
        "test_pr_auc",
        "recency_test_roc_auc",
        "logistic_test_roc_auc",
    } <= metrics
    champion = rest(uri, "registered-models/alias", name=f"demo-model-{tag}", alias="champion")
    assert champion["model_version"]["run_id"] == s["training"]["run_id"]
    assert s["scores"]["model_versions"] == [
        f"demo-model-{tag}/{champion['model_version']['version']}"
    ]
