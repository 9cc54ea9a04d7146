"""The model lifecycle against the real stream, store, scorer and MLflow: drift that acts
(jobs/drift.py), and realised performance once labels mature (jobs/realised.py).

Simulated users for 90 days are streamed, a champion is trained and scores them; the
drift check then compares that population with the champion's reference: no breach. The
same users then live 28 more days at five times the session rate, streamed and scored.
The first scoring day's 28-day horizon has now passed: its realised performance is
measured, checked against labels counted here from the simulated events, and, under a
floor set out of reach, starts a training run whose gate says why. The drift check then
finds the shift, logs it, and trains through the scheduler's lock, and the new training
run says why it started.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from jobs import realised
from jobs.drift import check_and_act
from jobs.stream_scores import start_score_stream
from scoring.sink import scores_path
from sources.simulator import SimulationConfig, simulate
from tests.integration.streaming import run_stream, scores_config, send
from training.pipeline import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = date(2024, 1, 1)


def stream(spark, cfg, sim: SimulationConfig) -> list[dict]:
    """The simulation through Kafka and the feature stream (available-now); its events."""
    events = list(simulate(sim))
    send(cfg, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
    run_stream(spark, cfg, lines=[])
    return events


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
    events = stream(spark, cfg, base)
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
    events += stream(spark, cfg, shifted)
    score(spark, cfg)
    realised_performance_is_measured_and_a_champion_under_the_floor_is_replaced(
        spark, cfg, events, first.model_version
    )
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


def realised_performance_is_measured_and_a_champion_under_the_floor_is_replaced(
    spark, cfg, events: list[dict], champion: str
) -> None:
    # What the champion scored on the first day: each user's last score of the day.
    scores = spark.read.format("delta").load(scores_path(cfg.warehouse_location())).toPandas()
    first_day = scores["features_as_of"].min()
    day = scores[(scores["features_as_of"] == first_day) & (scores["status"] == "scored")]
    day = day.sort_values("features_version").drop_duplicates("user_id", keep="last")
    # Their labels, counted from the events sent: no event in [day, day + 28).
    active = {(e["user_id"], pd.Timestamp(e["event_time"]).date()) for e in events}
    window = [first_day + timedelta(days=n) for n in range(28)]
    churned = np.array([all((u, d) not in active for d in window) for u in day["user_id"]])

    # A floor no model reaches: the champion's realised ROC-AUC is under it.
    gate = cfg.training.gate.model_copy(update={"floors": {"roc_auc": 0.99}})
    strict = cfg.model_copy(update={"training": cfg.training.model_copy(update={"gate": gate})})
    lines: list[str] = []
    report, decision = realised.check_and_act(spark, strict, log=lines.append)
    print("\n".join(lines))
    assert report is not None and report.champion == (cfg.mlflow.model_name, int(champion))
    # Only the first day has matured (the second scoring day's horizon runs past the data).
    assert [(r.features_as_of, r.model_version) for r in report.new.itertuples()] == [
        (first_day, int(champion))
    ]
    row = report.new.iloc[0]
    assert row["users"] == len(day) and row["churned"] == churned.sum() > 0
    assert row["roc_auc"] == pytest.approx(roc_auc_score(churned, day["score"]))
    low = (day["risk_band"] == "low").to_numpy()
    assert row["users_low"] == low.sum() > 0
    assert row["churn_rate_low"] == pytest.approx(churned[low].mean())
    assert row["mean_score_low"] == pytest.approx(day["score"][low].mean())
    assert report.breach.startswith(
        f"realised ROC-AUC of {cfg.mlflow.model_name} v{champion} {row['roc_auc']:.4f} "
        f"< floor 0.9900 on its scores as of {first_day}"
    )
    assert decision is not None and decision.action == "trained", decision
    uri = cfg.mlflow.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    retrained = decision.summary["model"].split("/")[1]
    run = client.get_run(client.get_model_version(cfg.mlflow.model_name, retrained).run_id)
    assert run.data.tags["churn.trigger"] == "realised"
    assert run.data.tags["churn.trigger_reason"] == report.breach
    assert run.data.tags["gate.reason"].startswith(
        f"the champion failed in production ({report.breach}); below floor: roc_auc "
    )
    assert run.data.tags["gate.decision"] == "rejected"  # the challenger misses 0.99 too

    # Measured once: a second check finds nothing new and trains nothing; the table and
    # the MLflow run hold the one row.
    again, none = realised.check_and_act(spark, strict, log=lines.append)
    assert again is not None and again.new.empty and none is None
    assert len(again.table) == 1 and again.table.iloc[0]["roc_auc"] == row["roc_auc"]
    exp = client.get_experiment_by_name(f"{cfg.mlflow.experiment}-realised")
    (logged,) = client.search_runs([exp.experiment_id])
    assert logged.data.tags["realised.breached"] == "true"
    (point,) = client.get_metric_history(logged.info.run_id, f"v{champion}.roc_auc")
    assert point.value == pytest.approx(row["roc_auc"])
    assert point.step == (first_day - date(1970, 1, 1)).days
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id, "realised")}
    assert artifacts == {"realised/table.csv", "realised/performance.png"}
