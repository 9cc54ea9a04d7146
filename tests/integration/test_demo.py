"""`make demo`'s job on the test stack, small and twice (as a user runs `make demo` again):
both summaries, what MLflow's REST API shows, and the notebooks, each run top to bottom
against what the second demo left."""

from __future__ import annotations

import json
import struct
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from infra import browser
from infra.config import Config
from jobs import demo
from tests.integration import notebooks
from tests.integration.streaming import stream_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def rest(base: str, path: str, **params: str) -> dict:
    url = f"{base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


def search_runs(base: str, experiment_id: str) -> list[dict]:
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search",
        method="POST",
        data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)["runs"]


@dataclass(frozen=True)
class DemoRun:
    cfg: Config
    config_path: Path
    first: dict  # the first demo's summary
    summary: dict  # the second's: same tables again, MLflow kept, so the gate meets a champion
    tag: str


@pytest.fixture(scope="module")
def demo_run(kafka_stack, mlflow_stack, base_config, tmp_path_factory) -> DemoRun:
    """jobs.demo, small, on the test stack, with its own topics, tables, experiment and model."""
    tmp_path = tmp_path_factory.mktemp("demo")
    cfg = stream_config(base_config, tmp_path, "demo")
    tag = cfg.kafka.topics.events.removeprefix("events-")
    cfg = cfg.model_copy(
        update={
            "kafka": cfg.kafka.model_copy(
                update={"topics": cfg.kafka.topics.model_copy(update={"scores": f"scores-{tag}"})}
            ),
            "mlflow": cfg.mlflow.model_copy(
                update={"experiment": f"exp-{tag}", "model_name": f"model-{tag}"}
            ),
            "training": cfg.training.model_copy(update={"state_dir": tmp_path / "training"}),
            # file:// URIs: every job takes a URI as given (decision 61), and the demo's reset
            # still finds the local folders behind them.
            "storage": cfg.storage.model_copy(
                update={
                    "warehouse": f"file://{tmp_path / 'warehouse'}",
                    "checkpoints": f"file://{tmp_path / 'checkpoints'}",
                }
            ),
        }
    )
    config_path = tmp_path / "demo.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    args = ["--config", str(config_path), "--users", "300", "--days", "90", "--bad-every", "500"]
    # 28 days on after training, two weeks at a time: the first scoring day's horizon passes.
    args += ["--live-days", "28", "--live-step", "14"]
    summaries = []
    for n in (1, 2):
        summary_path = tmp_path / f"summary-{n}.json"
        demo.main([*args, "--summary", str(summary_path)], stop_spark=False)
        summaries.append(json.loads(summary_path.read_text()))
    return DemoRun(cfg, config_path, summaries[0], summaries[1], tag)


def test_demo_runs_end_to_end_twice_and_mlflow_shows_its_runs_model_and_champion(
    demo_run, mlflow_stack
):
    first, s, tag = demo_run.first, demo_run.summary, demo_run.tag
    for run in (first, s):
        ev = run["events"]
        assert ev["processed"] == ev["produced"] == ev["valid"] + ev["quarantined"]
        assert ev["quarantined"] == ev["produced"] // 501 > 0  # one malformed record per 500
        assert run["users"] == run["feature_rows"] > 0
        sc = run["scores"]
        # Exactly the champion's population is scored; a user who left it has one lapsed
        # record as their latest, and nobody has both.
        assert 0 < sc["users_scored"] == sc["users_in_population"] < run["users"]
        assert sum(sc["latest_by_band"].values()) == sc["users_scored"]
        assert sc["users_scored"] + sc["users_lapsed"] <= run["users"]
        # Only the scores given when training ended (day 90) have a known outcome now.
        [day] = run["realised"]["rows"]
        assert day["features_as_of"] == "2024-03-31" and day["users"] > 100
        assert day["model"] in run["scores"]["model_versions"] and run["realised"]["run_id"]
    # The second demo reset topics and tables: it counts the same events, not twice as many.
    # (How many scores it wrote depends on how the live weeks fell into micro-batches.)
    assert s["events"] == first["events"] and s["feature_rows"] == first["feature_rows"]
    assert s["realised"]["rows"][0]["users"] == first["realised"]["rows"][0]["users"]
    assert first["training"]["promoted"] is True
    assert "no champion yet" in first["training"]["reason"]
    assert "champion v" in s["training"]["reason"]  # the second met the first at the gate

    uri = mlflow_stack.mlflow_uri
    exp = rest(uri, "experiments/get-by-name", experiment_name=f"exp-{tag}")["experiment"]
    # Tagged so that MLflow's UI opens it on its training runs, not the GenAI overview.
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in exp["tags"]
    runs_page = f"{uri}/#/experiments/{exp['experiment_id']}?workflowType=machine_learning"
    assert s["where"]["runs"] == runs_page
    runs = search_runs(uri, exp["experiment_id"])
    run_ids = [first["training"]["run_id"], s["training"]["run_id"]]
    assert sorted(r["info"]["run_id"] for r in runs) == sorted(run_ids)
    for r in runs:
        metrics = {m["key"] for m in r["data"]["metrics"]}
        assert {
            "test_roc_auc",
            "test_pr_auc",
            "recency_test_roc_auc",
            "logistic_test_roc_auc",
        } <= metrics
    versions = rest(uri, "model-versions/search", filter=f"name='model-{tag}'")["model_versions"]
    assert sorted(v["run_id"] for v in versions) == sorted(run_ids)
    champion = rest(uri, "registered-models/alias", name=f"model-{tag}", alias="champion")
    expected = run_ids[1] if s["training"]["promoted"] else run_ids[0]
    assert champion["model_version"]["run_id"] == expected
    assert s["scores"]["model_versions"] == [f"model-{tag}/{champion['model_version']['version']}"]


def test_the_pages_the_demo_links_show_its_runs_and_model_in_a_browser(
    demo_run, mlflow_stack, tmp_path
):
    """MLflow's UI rendered by headless Chromium, as a user's browser shows it: the training
    runs (not the GenAI overview), the newest run with its metrics, the model with its
    champion; each page also as a screenshot (docs/images holds the demo's)."""
    s, tag = demo_run.summary, demo_run.tag
    pages = browser.demo_pages(s)
    found = search_runs(mlflow_stack.mlflow_uri, s["training"]["experiment_id"])
    names = {r["info"]["run_id"]: r["info"]["run_name"] for r in found}
    runs = browser.page_text(pages["mlflow-training-runs"])
    assert "2 matching runs" in runs and all(n in runs for n in names.values()), runs[:2000]
    assert "Observability" not in runs  # the GenAI layout's navigation
    run = browser.page_text(pages["mlflow-run"])
    assert names[s["training"]["run_id"]] in run and "test_roc_auc" in run, run[:2000]
    model = browser.page_text(pages["mlflow-model"])
    assert f"model-{tag}" in model and "@ champion" in model, model[:2000]
    for name, url in pages.items():
        png = browser.screenshot(url, tmp_path / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert (width, height) == browser.WINDOW and len(png) > 20_000, (name, len(png))


@pytest.mark.parametrize("notebook", notebooks.NOTEBOOKS, ids=notebooks.IDS)
def test_notebook_runs_top_to_bottom_against_the_demo(demo_run, notebook, tmp_path):
    """Each notebook, executed in a real Jupyter kernel against the demo's tables and MLflow
    (CHURN_CONFIG points it there): no cell fails and every figure renders."""
    notebooks.execute(notebook, demo_run.cfg, demo_run.config_path, tmp_path)
