"""The scorer on the real stack: events -> feature stream -> user_features CDF -> stream_scores
-> Kafka `churn-scores` + Delta `churn_scores`, with models from a real MLflow registry.

One module-scoped scenario runs a single scoring query through six phases, never
restarting it:

0. simulated events go through Kafka and the feature stream into user_features;
1. the scorer starts before any model exists and waits; v1 (recency rule) becomes champion;
2. one user sends an event two days later: the feature stream moves as_of and refreshes
   every user, so the quiet ones are rescored without sending anything (decision 9);
3. champion -> v2 (sessions rule), five users' features change: scored by v2;
4. champion -> v3, whose signature has other columns: refused, v2 keeps scoring;
5. champion -> v4, whose model file is corrupt in the artifact store: refused, v2 scores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from pyspark.sql import functions as F

from features.registry import FEATURE_NAMES
from infra import faults
from jobs.stream_scores import app_id, model_cache, rules_from, start_score_stream
from scoring.inputs import snapshot
from scoring.model import MlflowRegistry, load_model
from scoring.runner import score_table
from scoring.score import score_frame
from scoring.sink import ScoreSink, scores_path
from store.tables import FeatureStore, Txn, append, latest_per_user
from tests.integration.streaming import consume, run_stream, scores_config, send
from tests.scoring.models import register

pytestmark = pytest.mark.integration

N_USERS = 25  # 23 of them send events
CHANGED = {3: slice(0, 5), 4: slice(5, 10), 5: slice(10, 15)}  # phase -> users updated


def events_json(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["user_id"].encode(), json.dumps(e).encode()) for e in events]


def corrupt(stack, model_id: str) -> Path:
    """Overwrite a logged model's booster file in the server's artifact store."""
    root = stack.state_dir / "mlflow" / "artifacts"
    [path] = [p for p in root.rglob("model.lgb") if model_id in p.parts]
    path.write_text("this is not a LightGBM model\n")
    return path


def wait_for(predicate, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scenario(kafka_stack, mlflow_stack, base_config, spark, tmp_path_factory):
    cfg = scores_config(base_config, tmp_path_factory.mktemp("scores"), mlflow_stack.mlflow_uri)
    from sources.simulator import SimulationConfig, simulate

    store = FeatureStore(cfg.storage.warehouse)
    features_path = store.path("user_features")
    events = list(simulate(SimulationConfig(n_users=N_USERS, days=14, seed=5)))
    send(cfg, events_json(events))
    run_stream(spark, cfg)  # phase 0
    phases = {0: store.version(spark, "user_features")}

    lines: list[str] = []
    cache = model_cache(cfg, lines.append)
    started: dict = {}

    def start() -> None:
        try:
            started["query"] = start_score_stream(spark, cfg, log=lines.append, cache=cache)
        except BaseException as exc:  # surfaced by the assertion after join
            started["error"] = exc

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    wait_for(lambda: any("waiting for a model" in line for line in lines), "the scorer to wait")
    uri, name = cfg.mlflow.tracking_uri, cfg.mlflow.model_name
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = {"v1": register(uri, name, "recency")[0]}
    client.set_registered_model_alias(name, "champion", versions["v1"])
    thread.join(120)
    assert "query" in started, started.get("error", "the scorer did not start in time")
    query = started["query"]
    try:
        query.processAllAvailable()  # phase 1
        phases[1] = phases[0]
        versions["v2"] = register(uri, name, "sessions")[0]
        versions["v3"] = register(uri, name, "recency", names=[*FEATURE_NAMES[:-1], "other"])[0]
        versions["v4"], v4_id = register(uri, name, "recency")
        corrupt(mlflow_stack, v4_id)

        # Phase 2: one user comes back two days after the last event; nobody else does.
        last = max(e["event_time"] for e in events)
        when = datetime.fromisoformat(last.replace("Z", "+00:00")) + timedelta(days=2)
        back = {**events[-1], "event_id": "back-1", "event_type": "page_view"}
        back["event_time"] = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        send(cfg, events_json([back]))
        run_stream(spark, cfg)
        query.processAllAvailable()
        phases[2] = store.version(spark, "user_features")

        users = sorted(r["user_id"] for r in store.read(spark, "user_features").collect())
        for phase, alias_to in ((3, "v2"), (4, "v3"), (5, "v4")):
            client.set_registered_model_alias(name, "champion", versions[alias_to])
            changed = (
                store.read(spark, "user_features")
                .where(F.col("user_id").isin(users[CHANGED[phase]]))
                .withColumn("n_support_contact_lifetime", F.col("n_support_contact_lifetime") + 3)
                .withColumn("n_session_start_30d", F.lit(0).cast("long"))
            )
            # A new vector per changed user, appended as the feature stream does.
            append(
                changed.withColumn("batch_id", F.lit(1000 + phase).cast("long")),
                features_path,
                Txn("test-updates", phase),
            )
            query.processAllAvailable()
            phases[phase] = store.version(spark, "user_features")
    finally:
        query.stop()
    assert query.exception() is None
    scores = ScoreSink(scores_path(cfg.storage.warehouse)).read(spark)
    return {
        "cfg": cfg,
        "store": store,
        "lines": lines,
        "cache": cache,
        "versions": versions,
        "phases": phases,
        "users": users,
        "scores": scores,
        "query_id": query.id,
    }


def rows_by_phase(s) -> dict[int, list]:
    """Score rows per phase: phase p's rows come from user_features versions in (p-1, p]."""
    rows = s["scores"].collect()
    phases, out = s["phases"], {}
    for p in range(1, 6):
        low = phases[p - 1] if p > 1 else -1
        out[p] = [r for r in rows if low < r["features_version"] <= phases[p]]
    return out


def test_waits_for_a_model_then_scores_everyone_with_it(scenario):
    lines, name, v1 = (
        scenario["lines"],
        scenario["cfg"].mlflow.model_name,
        scenario["versions"]["v1"],
    )
    waiting = [i for i, line in enumerate(lines) if "waiting for a model at alias champion" in line]
    first_batch = next(i for i, line in enumerate(lines) if "stream_scores: batch 0:" in line)
    assert waiting and waiting[-1] < first_batch
    assert f"model: now scoring with {name} v{v1} at alias champion (first model)" in lines
    phase1 = rows_by_phase(scenario)[1]
    assert sorted(r["user_id"] for r in phase1) == scenario["users"]
    assert {r["model_version"] for r in phase1} == {v1}


def test_quiet_users_are_rescored_when_the_day_moves(scenario, spark):
    """Decision 9: nobody but one user sent anything, yet every user got a fresh score."""
    by_phase = rows_by_phase(scenario)
    assert sorted(r["user_id"] for r in by_phase[2]) == scenario["users"]
    before = {r["user_id"]: r for r in by_phase[1]}
    for row in by_phase[2]:
        assert row["features_as_of"] > before[row["user_id"]]["features_as_of"]
    # The recency model sees the silence: scores rise on average.
    mean = lambda rows: sum(r["score"] for r in rows) / len(rows)  # noqa: E731
    assert mean(by_phase[2]) > mean(by_phase[1])


def test_champion_swaps_without_a_restart(scenario):
    s = scenario
    name, v = s["cfg"].mlflow.model_name, s["versions"]
    assert (
        f"model: now scoring with {name} v{v['v2']} at alias champion (was v{v['v1']})"
        in (s["lines"])
    )
    phase3 = rows_by_phase(s)[3]
    assert sorted(r["user_id"] for r in phase3) == s["users"][CHANGED[3]]
    assert {r["model_version"] for r in phase3} == {v["v2"]}
    # One query did it all: its batches are numbered on from 0 without a gap.
    batches = [
        line.split(":")[1].split()[-1] for line in s["lines"] if "stream_scores: batch" in line
    ]
    assert [int(b) for b in batches] == list(range(len(batches)))
    cfg = s["cfg"]
    checkpoint = cfg.resolve(cfg.storage.checkpoints) / cfg.scoring.checkpoint_name
    assert {r["writer"] for r in s["scores"].collect()} == {app_id(str(checkpoint))}


def test_a_broken_champion_is_refused_and_the_old_model_keeps_scoring(scenario):
    s = scenario
    name, v, cache = s["cfg"].mlflow.model_name, s["versions"], s["cache"]
    by_phase = rows_by_phase(s)
    for phase in (4, 5):
        assert sorted(r["user_id"] for r in by_phase[phase]) == s["users"][CHANGED[phase]]
        assert {r["model_version"] for r in by_phase[phase]} == {v["v2"]}
    assert (cache.counters.signature_mismatches, cache.counters.load_failures) == (1, 1)
    assert cache.current.version == v["v2"]
    refused = [line for line in s["lines"] if line.endswith(f"keeping {name} v{v['v2']}")]
    assert len(refused) == 2
    assert f"{name} v{v['v3']} at alias champion rejected, signature does not match" in refused[0]
    assert (
        "1 features missing ['n_subscription_cancel_lifetime'], 1 unexpected ['other']"
        in (refused[0])
    )
    assert f"{name} v{v['v4']} at alias champion cannot be loaded" in refused[1]
    last_batch = [line for line in s["lines"] if "stream_scores: batch" in line][-1]
    assert f"alias -> v{v['v4']} not used" in last_batch


def test_scores_on_the_topic_match_the_table(scenario):
    cfg, rows = scenario["cfg"], scenario["scores"].collect()
    got = consume(cfg, len(rows), idle_s=1.0)
    assert len(got) == len(rows)
    by_id = {value["record_id"]: (key, value) for key, value in got}
    assert len(by_id) == len(rows)
    for row in rows:
        key, value = by_id[row["record_id"]]
        assert key == value["user_id"] == row["user_id"]
        assert (value["score"], value["risk_band"], value["model_version"]) == (
            row["score"],
            row["risk_band"],
            row["model_version"],
        )
        assert value["features_as_of"] == row["features_as_of"].isoformat()
        assert value["features_version"] == row["features_version"]
        reasons = None if row["reasons"] is None else [r.asDict() for r in row["reasons"]]
        assert value["reasons"] == reasons


def test_each_score_is_traceable_to_its_model_and_features(scenario, spark):
    """Time-travel to the features version a score names, load the model version it names,
    score again: the same score."""
    s = scenario
    cfg, store = s["cfg"], s["store"]
    registry = MlflowRegistry(cfg.mlflow.tracking_uri)
    rows = s["scores"].collect()
    groups = {(r["features_version"], r["model_version"]) for r in rows}
    for features_version, model_version in sorted(groups):
        mine = {
            r["user_id"]: r
            for r in rows
            if (r["features_version"], r["model_version"]) == (features_version, model_version)
        }
        table = latest_per_user(
            spark.read.format("delta")
            .option("versionAsOf", features_version)
            .load(store.path("user_features"))
        ).where(F.col("user_id").isin(list(mine)))
        model = load_model(registry, cfg.mlflow.model_name, model_version, FEATURE_NAMES)
        again = score_frame(
            model,
            snapshot(table, features_version, datetime(2000, 1, 1)).toPandas(),
            rules_from(cfg),
        )
        assert len(again) == len(mine)
        for _, new in again.iterrows():
            old = mine[new["user_id"]]
            assert new["features_as_of"] == old["features_as_of"]
            assert (new["record_id"], new["score"]) == (old["record_id"], old["score"])


def test_batch_scoring_gives_the_streams_scores(scenario, spark, tmp_path):
    s = scenario
    cfg, v2 = s["cfg"], s["versions"]["v2"]
    model = load_model(
        MlflowRegistry(cfg.mlflow.tracking_uri), cfg.mlflow.model_name, v2, FEATURE_NAMES
    )
    sink = ScoreSink(str(tmp_path / "batch_scores"))
    result, _ = score_table(
        spark, s["store"].path("user_features"), model, rules=rules_from(cfg), sink=sink
    )
    assert result.scored == len(s["users"])
    batch = {r["user_id"]: r for r in sink.read(spark).collect()}
    streamed = [r for r in s["scores"].collect() if r["model_version"] == v2]
    assert len(streamed) == 15
    for row in streamed:  # users updated once since phase 3: their current vector was scored
        other = batch[row["user_id"]]
        assert (other["record_id"], other["score"], other["risk_band"], other["reasons"]) == (
            row["record_id"],
            row["score"],
            row["risk_band"],
            row["reasons"],
        )


def test_restart_from_the_checkpoint_leaves_no_duplicates(scenario, spark, tmp_path):
    """The job died after its last batch's writes, before the checkpoint's commit: the
    restarted query replays that batch, which writes nothing twice."""
    s = scenario
    cfg = s["cfg"]
    checkpoint = cfg.resolve(cfg.storage.checkpoints) / cfg.scoring.checkpoint_name
    commits = sorted((checkpoint / "commits").glob("[0-9]*"), key=lambda p: int(p.name))
    last = commits[-1]
    last.unlink()
    (checkpoint / "commits" / f".{last.name}.crc").unlink(missing_ok=True)
    before = s["scores"].count()
    lines: list[str] = []
    query = start_score_stream(spark, cfg, available_now=True, log=lines.append)
    try:
        query.awaitTermination(300)
    finally:
        query.stop()
    assert query.exception() is None
    # The champion (v4) is still broken: the new process resumes with the last scores' model.
    name, v2 = cfg.mlflow.model_name, s["versions"]["v2"]
    assert any(
        line.startswith(f"model: resuming with {name} v{v2}, the model of this scorer's last")
        for line in lines
    ), lines
    assert f"stream_scores: batch {last.name}: already written, skipped" in lines
    scores = ScoreSink(scores_path(cfg.storage.warehouse)).read(spark)
    assert scores.count() == before == scores.select("record_id").distinct().count()

    # Without its checkpoint, the scorer refuses to start over scores it wrote.
    checkpoint.rename(tmp_path / "moved-checkpoint")
    try:
        with pytest.raises(SystemExit, match=r"checkpoint .* is gone"):
            start_score_stream(spark, cfg, available_now=True, log=lines.append)
    finally:
        (tmp_path / "moved-checkpoint").rename(checkpoint)


def start_job(
    config_path: Path, log_path: Path, *extra: str, fault: str | None = None
) -> subprocess.Popen:
    """The job in its own process group; ``fault``: where it kills itself (infra/faults.py)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if fault:
        env[faults.ENV] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.stream_scores", "--config", str(config_path), *extra],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["scores.sent", "scores.written"])
def test_killed_scorer_restarts_from_its_checkpoint_without_duplicates(
    scenario, spark, tmp_path, fault
):
    """kill -9 the job while feature updates keep coming, between its Kafka write and its
    Delta append or between that append and its checkpoint commit; restart it:
    churn_scores holds each score once, Kafka holds every one of them (some maybe twice,
    byte-identical), and the batch job gives the same scores for the same features and
    model."""
    s = scenario
    base, name, v2 = s["cfg"], s["cfg"].mlflow.model_name, s["versions"]["v2"]
    warehouse = tmp_path / "warehouse"
    shutil.copytree(s["store"].path("user_features"), warehouse / "user_features")
    uri = base.mlflow.tracking_uri
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(name, "crash", v2)
    cfg = base.model_copy(
        update={
            "storage": base.storage.model_copy(
                # file:// URIs: the job and the batch job take them as given (a URI is not a
                # local path to resolve; decision 61).
                update={
                    "warehouse": f"file://{warehouse}",
                    "checkpoints": f"file://{tmp_path / 'checkpoints'}",
                }
            ),
            "kafka": base.kafka.model_copy(
                update={
                    "topics": base.kafka.topics.model_copy(
                        update={"scores": f"scores-crash-{uuid.uuid4().hex[:6]}"}
                    )
                }
            ),
            "scoring": base.scoring.model_copy(update={"model_alias": "crash"}),
        }
    )
    config_path = tmp_path / "scores.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    features = FeatureStore(str(warehouse))
    users = s["users"]

    def touch(n: int) -> None:
        changed = (
            features.read(spark, "user_features")
            .where(F.col("user_id").isin(users[n % len(users)], users[(n + 7) % len(users)]))
            .withColumn("n_events_lifetime", F.col("n_events_lifetime") + n)
        )
        # Batch ids above the scenario's (1003-1005): each touch is the newest vector of its
        # users by batch id too, as the feature stream's would be, so the batch job's latest
        # vector per user is the one the stream scored last.
        append(
            changed.withColumn("batch_id", F.lit(2000 + n).cast("long")),
            features.path("user_features"),
            Txn("crash", n),
        )

    log = tmp_path / "job.log"
    # The job kills itself (SIGKILL, its JVM too) at the fault point of its third batch or
    # a later one, while the updates keep coming (infra/faults.py).
    job = start_job(config_path, log, fault=f"{fault}@2")
    n = 0
    try:
        deadline = time.monotonic() + 300
        while job.poll() is None:
            assert time.monotonic() < deadline, "the fault point was not reached in time"
            n += 1
            touch(n)
        assert job.returncode == -signal.SIGKILL, log.read_text(errors="replace")[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert f"CHURN_FAULT: SIGKILL at {fault} in batch" in log.read_text()
    for _ in range(2):  # more updates while the scorer is down
        n += 1
        touch(n)

    restarted = start_job(config_path, log, "--available-now")
    assert restarted.wait(600) == 0, log.read_text(errors="replace")[-3000:]

    rows = ScoreSink(scores_path(str(warehouse))).read(spark).collect()
    ids = [r["record_id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert len({(r["batch_id"], r["user_id"]) for r in rows}) == len(rows)
    newest = {
        r["user_id"]: r["_commit_version"]
        for r in spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", 0)
        .load(features.path("user_features"))
        .where(F.col("_change_type").isin("insert", "update_postimage"))
        .groupBy("user_id")
        .agg(F.max("_commit_version").alias("_commit_version"))
        .collect()
    }
    scored: dict[str, dict] = {}
    for r in rows:
        if (
            r["features_version"]
            > scored.get(r["user_id"], {"features_version": -1})["features_version"]
        ):
            scored[r["user_id"]] = r.asDict()
    assert {u: r["features_version"] for u, r in scored.items()} == newest

    messages = consume(cfg, len(rows))
    assert {v["record_id"] for _, v in messages} == set(ids)
    first: dict[str, dict] = {}
    for _, value in messages:  # a re-sent record is the same record
        assert first.setdefault(value["record_id"], value) == value

    batch_out = tmp_path / "batch_scores"
    done = subprocess.run(
        [sys.executable, "-m", "jobs.score_batch", "--config", str(config_path),
         "--version", str(v2), "--output", str(batch_out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(users)} users scored with {name} v{v2}" in done.stderr
    batch = {r["user_id"]: r for r in ScoreSink(str(batch_out)).read(spark).collect()}
    assert {u: (r["record_id"], r["score"]) for u, r in batch.items()} == {
        u: (r["record_id"], r["score"]) for u, r in scored.items()
    }
