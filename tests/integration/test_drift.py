"""Drift that acts: a population shifted on purpose starts a training run, an unshifted one
does not (jobs/drift.py against the real stream, store, scorer and MLflow).

Simulated users for 90 days are streamed, a champion is trained and scores them; the
drift check then compares that population with the champion's reference: no breach. The
same users then live 28 more days at five times the session rate; streamed and scored,
the check finds the shift, logs it, and trains through the scheduler's lock, and the new
training run says why it started.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from mlflow import MlflowClient

from jobs.drift import check_and_act
from jobs.stream_scores import start_score_stream
from sources.simulator import SimulationConfig, simulate
from tests.integration.streaming import run_stream, scores_config, send
from training.pipeline import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = date(2024, 1, 1)


def stream(spark, cfg, sim: SimulationConfig) -> None:
    """The simulation through Kafka and the feature stream (available-now)."""
    send(cfg, [(e["user_id"].encode(), json.dumps(e).encode()) for e in simulate(sim)])
    run_stream(spark, cfg, lines=[])


def score(spark, cfg) -> None:
    """The scorer over every feature update so far (available-now)."""
    query = start_score_stream(spark, cfg, available_now=True, log=lambda _line: None)
    try:
        query.awaitTermination(600)
    finally:
        query.stop()
    assert query.exception() is None


def test_a_shifted_population_triggers_training_and_an_unshifted_one_does_not(
    kafka_stack, mlflow_stack, base_config, spark, tmp_path
):
    cfg = scores_config(base_config, tmp_path, mlflow_stack.mlflow_uri)
    cfg = cfg.model_copy(
        update={"training": cfg.training.model_copy(update={"state_dir": tmp_path / "training"})}
    )
    base = SimulationConfig(n_users=300, days=90, start=START, seed=21)
    stream(spark, cfg, base)
    first = train(spark, cfg)
    assert first.promoted
    score(spark, cfg)

    lines: list[str] = []
    report, decision = check_and_act(spark, cfg, log=lines.append)
    print("\n".join(lines))
    assert report is not None and report.version == int(first.model_version)
    assert report.live_users > 0 and report.scored_users == report.live_users
    assert report.breached.empty and decision is None, report.reason()

    # The same users, 28 more days, five times as many sessions a day.
    shifted = SimulationConfig(
        n_users=300,
        days=28,
        start=START + timedelta(days=90),
        seed=22,
        sessions_per_day=base.sessions_per_day * 5,
    )
    stream(spark, cfg, shifted)
    score(spark, cfg)
    lines.clear()
    report, decision = check_and_act(spark, cfg, log=lines.append)
    print("\n".join(lines))
    assert report is not None and not report.breached.empty
    assert decision is not None and decision.action == "trained", decision
    uri = cfg.mlflow.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    new_version = decision.summary["model"].split("/")[1]
    run = client.get_run(client.get_model_version(cfg.mlflow.model_name, new_version).run_id)
    assert run.data.tags["churn.trigger"] == "drift"
    assert run.data.tags["churn.trigger_reason"] == report.reason()
    assert report.reason().startswith("drift: PSI > 0.25 in ")
    assert client.get_run(first.run_id).data.tags["churn.trigger"] == "manual"

    # Both checks are MLflow runs of the drift experiment, with their verdicts.
    drift = client.get_experiment_by_name(f"{cfg.mlflow.experiment}-drift")
    checks = client.search_runs(
        [drift.experiment_id], filter_string=f"tags.`drift.model` = '{cfg.mlflow.model_name}/1'"
    )
    assert sorted(r.data.tags["drift.breached"] for r in checks) == ["false", "true"]
    assert all(r.data.metrics["psi_max"] >= 0 for r in checks)
    breach = next(r for r in checks if r.data.tags["drift.breached"] == "true")
    assert breach.data.metrics["psi_max"] > 0.25
    artifacts = {a.path for a in client.list_artifacts(breach.info.run_id, "drift")}
    assert artifacts == {"drift/report.csv", "drift/psi.png"}
