"""The stack shaped like production (conf/cluster.yaml): Delta tables and streaming
checkpoints on an S3-compatible object store (S3Proxy, s3a://), MLflow's runs and registry
in PostgreSQL and its artifacts in the same store. The stack starts all of it in its own
state dir on free loopback ports, and:

- the demo's whole flow runs on it: stream features, train, register, move the champion
  alias, score every user; the tables and the model's files are in the bucket, the registry
  in PostgreSQL (read back with SQL), and both outlive a restart of the stack;
- the notebooks run against it;
- both streaming jobs, killed with SIGKILL under traffic and restarted from their
  checkpoints on the object store, lose and double nothing;
- the five jobs, submitted with spark-submit to a standalone cluster (a master and two
  workers), build the same tables and scores as the demo's local[2] run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from infra import stack as local_stack
from infra import stack_postgres, stack_spark, submit
from infra.config import REPO_ROOT, Config, load_config
from tests.conftest import NO_METRICS, free_port
from tests.integration import notebooks
from tests.integration.streaming import kills_under_load, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class ClusterStack:
    cfg: Config
    config_path: Path
    stack: local_stack.Stack
    root: Path

    @property
    def bucket_dir(self) -> Path:
        """The bucket as S3Proxy keeps it on disk (what the test checks, not how jobs read)."""
        return self.stack.state_dir / "s3proxy" / "data" / self.stack.bucket


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterStack]:
    # Run as root, PostgreSQL runs as `postgres`, which must reach its data directory: pytest's
    # temporary directories are private to root, so this one is made where others can pass.
    root = Path(tempfile.mkdtemp(prefix="churn-cluster-"))
    root.chmod(0o755)
    state = root / "stack"
    kafka, controller, mlflow_port, pg_port, s3_port, master, master_ui = (
        free_port() for _ in range(7)
    )
    overrides = {
        "kafka": {"bootstrap_servers": f"127.0.0.1:{kafka}"},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{mlflow_port}"},
        "stream_features": {"id_index_dir": str(root / "event-ids")},
        "training": {"state_dir": str(root / "training")},
        "spark": {
            "shuffle_partitions": 2,
            "conf": {"spark.hadoop.fs.s3a.endpoint": f"http://127.0.0.1:{s3_port}"},
        },
        "monitoring": NO_METRICS.model_dump(),
        "local_stack": {
            "state_dir": str(state),
            "kafka_port": kafka,
            "kafka_controller_port": controller,
            "mlflow_port": mlflow_port,
            "postgres_port": pg_port,
            "object_store_port": s3_port,
            "spark_master_port": master,
            "spark_master_webui_port": master_ui,
        },
    }
    config_path = root / "cluster.yaml"
    config_path.write_text(
        yaml.safe_dump({"extends": str(REPO_ROOT / "conf" / "cluster.yaml"), **overrides})
    )
    cfg = load_config(config_path, environ={})
    assert cfg.warehouse_location().startswith("s3a://")
    stack = local_stack.Stack.from_config(cfg)
    try:
        local_stack.up(stack)
        yield ClusterStack(cfg, config_path, stack, root)
    finally:
        local_stack.down(stack)
        shutil.rmtree(root, ignore_errors=True)


def registry_rows(c: ClusterStack) -> dict[str, list[tuple]]:
    """What MLflow's tables in PostgreSQL hold for the model, read with SQL."""
    import psycopg

    d = c.stack.state_dir / stack_postgres.SERVICE
    dsn = stack_postgres.uri(d, c.stack.host, c.stack.postgres_port)
    name = c.cfg.mlflow.model_name
    with psycopg.connect(dsn) as conn:
        return {
            "versions": conn.execute(
                "SELECT version, run_id FROM model_versions WHERE name = %s ORDER BY version",
                (name,),
            ).fetchall(),
            "aliases": conn.execute(
                "SELECT alias, version FROM registered_model_aliases WHERE name = %s", (name,)
            ).fetchall(),
            "runs": conn.execute("SELECT run_uuid, status FROM runs").fetchall(),
        }


@pytest.fixture(scope="module")
def demo(cluster: ClusterStack) -> dict:
    """`make demo CONFIG=cluster`'s job, small, as a process; its summary."""
    summary = cluster.root / "summary.json"
    # No days after training: the cluster's jobs replay the demo's events in one pass, and
    # their tables and model must equal the demo's.
    small = ["--users", "300", "--days", "90", "--live-days", "0", "--summary", str(summary)]
    done = subprocess.run(
        [sys.executable, "-m", "jobs.demo", "--config", str(cluster.config_path), *small],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(summary.read_text())


def test_the_demo_runs_on_the_object_store_and_postgresql(cluster, demo):
    s = demo
    sc = s["scores"]
    assert s["training"]["promoted"] and 0 < sc["users_scored"] == sc["users_in_population"], s
    # The tables and the checkpoints are in the bucket; nothing went to a local warehouse.
    for table in ("events", "user_features", "churn_scores"):
        assert (cluster.bucket_dir / "warehouse" / table / "_delta_log").is_dir(), table
    for query in ("stream_features", "stream_scores"):
        assert (cluster.bucket_dir / "checkpoints" / query / "offsets").is_dir(), query
    assert not (REPO_ROOT / "s3a:").exists()
    # The registry is in PostgreSQL; the model's files in the bucket, under mlflow/.
    rows = registry_rows(cluster)
    print(f"\nin PostgreSQL: {rows['versions']=} {rows['aliases']=} {len(rows['runs'])} runs")
    assert rows["versions"] and ("champion", rows["versions"][-1][0]) in rows["aliases"]
    assert any(run_id == rows["versions"][-1][1] for run_id, _ in rows["runs"])
    models = list((cluster.bucket_dir / "mlflow").glob("*/models/m-*/artifacts/MLmodel"))
    assert models, sorted(p.name for p in (cluster.bucket_dir / "mlflow").rglob("*"))[:20]
    assert not (cluster.stack.state_dir / "mlflow" / "mlflow.db").exists()
    assert not any((cluster.stack.state_dir / "mlflow" / "artifacts").iterdir())


@pytest.mark.parametrize("notebook", notebooks.NOTEBOOKS, ids=notebooks.IDS)
def test_notebook_runs_against_the_object_store(cluster, demo, notebook, tmp_path):
    """Each notebook top to bottom in a real kernel, reading the tables from the bucket and
    the model from MLflow on PostgreSQL."""
    notebooks.execute(notebook, cluster.cfg, cluster.config_path, tmp_path)


def test_both_jobs_killed_under_load_restart_from_checkpoints_on_the_store(cluster, demo, tmp_path):
    """The crash test of docs/reliability.md, once per kill point, with every table and
    checkpoint on s3a:// and the scorer's model in MLflow on PostgreSQL."""
    suffix = uuid.uuid4().hex[:6]
    base = cluster.cfg
    bucket = f"s3a://{cluster.stack.bucket}/crash-{suffix}"
    cfg = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(
                update={
                    "topics": base.kafka.topics.model_copy(
                        update={
                            "events": f"events-{suffix}",
                            "dlq": f"dlq-{suffix}",
                            "scores": f"scores-{suffix}",
                        }
                    )
                }
            ),
            "storage": base.storage.model_copy(
                update={"warehouse": f"{bucket}/warehouse", "checkpoints": f"{bucket}/checkpoints"}
            ),
            "stream_features": base.stream_features.model_copy(
                update={
                    "trigger_s": 0.5,
                    "max_offsets_per_trigger": 1000,
                    "id_index_dir": str(tmp_path / "event-ids"),
                }
            ),
            "mlflow": base.mlflow.model_copy(update={"model_name": f"churn-{suffix}"}),
            "scoring": base.scoring.model_copy(update={"trigger_s": 0.5, "wait_for_model_s": 0.5}),
        }
    )
    produced, cycles = kills_under_load(
        cfg, tmp_path, ["features.committed"], ["scores.sent", "scores.written"]
    )
    # The checks need a Spark session that reads s3a://: a process of their own.
    (tmp_path / "produced.json").write_text(json.dumps(sorted(produced)))
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.check_on_store",
            str(write_config(cfg, tmp_path / "check.yaml")),
            str(tmp_path / "produced.json"),
            str(tmp_path / "scratch"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-5000:]
    print(
        f"\ncrash on the object store: kills {cycles['stream_features']['kills']} (features) "
        f"{cycles['stream_scores']['kills']} (scorer); {check.stdout.strip().splitlines()[-1]}"
    )


@pytest.fixture(scope="module")
def spark_cluster(cluster: ClusterStack) -> Iterator[str]:
    """`make cluster-up`'s standalone cluster (a master and two one-core workers) in the
    stack's state dir; its master's URL."""
    stack_spark.cluster_up(cluster.stack)
    try:
        yield stack_spark.master_url(cluster.stack)
    finally:
        stack_spark.cluster_down(cluster.stack)


def test_every_job_submitted_to_a_standalone_cluster_matches_local_mode(
    cluster, demo, spark_cluster
):
    """The five jobs through `make submit` (spark-submit --master spark://..., the project as a
    wheel, the jars with --jars) on the demo's events, into a warehouse of their own on the
    object store: every table and score equals the demo's local[2] run."""
    from mlflow import MlflowClient

    python = submit.cluster_python()
    alone = subprocess.run([str(python), "-c", "import infra"], capture_output=True, cwd="/")
    assert alone.returncode != 0, "the cluster's Python must get the project from the wheel only"

    on = f"s3a://{cluster.stack.bucket}/on-cluster"
    t = cluster.cfg.kafka.topics
    config = cluster.root / "on-cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "extends": str(cluster.config_path),
                "storage": {"warehouse": f"{on}/warehouse", "checkpoints": f"{on}/checkpoints"},
                "stream_features": {"id_index_dir": str(cluster.root / "on-cluster-ids")},
                "kafka": {"topics": {"dlq": f"{t.dlq}-on-cluster", "scores": f"{t.scores}-oc"}},
                "mlflow": {"model_name": "churn-on-cluster"},
                "training": {"state_dir": str(cluster.root / "on-cluster-training")},
            }
        )
    )
    # Each phase needs the one before; a phase's jobs run side by side, a core each.
    phases = [
        [("stream_features", ["--available-now"])],
        [("train", [])],
        [
            ("stream_scores", ["--available-now"]),
            ("backfill_features", ["--warehouse", f"{on}/warehouse/backfill"]),
            ("score_batch", ["--output", f"{on}/warehouse/batch_scores"]),
        ],
    ]
    took, logs = {}, cluster.root / "on-cluster-logs"
    logs.mkdir(exist_ok=True)
    submit.build_wheel()  # once, before jobs start side by side
    submit_cmd = [sys.executable, "-m", "infra.submit", "--config", str(config)]
    for phase in phases:
        t0, running = time.monotonic(), {}
        try:
            for job, args in phase:
                cores = ["--cores", "1"] if len(phase) > 1 else []
                with (logs / f"{job}.out").open("w") as out, (logs / f"{job}.err").open("w") as err:
                    running[job] = subprocess.Popen(
                        [*submit_cmd, *cores, job, *args],
                        cwd=REPO_ROOT,
                        stdout=out,
                        stderr=err,
                        env={**os.environ, "SPARK_MASTER": spark_cluster},
                    )
            for job, proc in running.items():
                rc = proc.wait(timeout=900)
                out_text, err_text = ((logs / f"{job}.{x}").read_text() for x in ("out", "err"))
                assert rc == 0, f"{job}:\n{out_text[-3000:]}\n{err_text[-6000:]}"
                took[job] = time.monotonic() - t0
                (command,) = [
                    line
                    for line in err_text.splitlines()
                    if line.startswith("submit: ") and "bin/spark-submit " in line
                ]
                assert f"--master {spark_cluster} --py-files " in command, command
                assert ".zip --jars " in command and "hadoop-aws" in command, command
        finally:  # a failed job's partners do not outlive the test
            for proc in running.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
    print(f"\non the cluster: {', '.join(f'{j} {s:.0f}s' for j, s in took.items())}")
    print(command)

    # Training on the cluster saw the demo's rows: the same model, by its test metrics.
    uri = cluster.cfg.mlflow.tracking_uri
    client = MlflowClient(uri, uri)
    metrics = [
        client.get_run(client.get_model_version_by_alias(name, "champion").run_id).data.metrics
        for name in (cluster.cfg.mlflow.model_name, "churn-on-cluster")
    ]
    tested = {k for k in metrics[0] if k.startswith("test_")}
    assert tested and {k: metrics[0][k] for k in tested} == {k: metrics[1][k] for k in tested}

    compared = subprocess.run(
        [
            *(sys.executable, "-m", "tests.integration.compare_runs"),
            *(str(cluster.config_path), cluster.cfg.warehouse_location(), f"{on}/warehouse"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = compared.stdout.strip()
    print(report)
    assert compared.returncode == 0, report + compared.stderr[-5000:]
    assert report.count("\n") == 8, report  # every comparison ran


def test_the_registry_and_the_store_outlive_a_restart_of_the_stack(cluster, demo):
    from mlflow import MlflowClient

    before = registry_rows(cluster)
    local_stack.down(cluster.stack)
    for service in (stack_postgres.SERVICE, "s3proxy", "mlflow"):
        assert local_stack.running_pid(cluster.stack, service) is None, service
    local_stack.up(cluster.stack)
    uri = cluster.cfg.mlflow.tracking_uri
    champion = MlflowClient(uri, uri).get_model_version_by_alias(
        cluster.cfg.mlflow.model_name, "champion"
    )
    assert ("champion", int(champion.version)) in before["aliases"]
    assert registry_rows(cluster)["versions"] == before["versions"]
    answer = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mlflow, sys; print(mlflow.artifacts.download_artifacts(sys.argv[1]))",
            f"models:/{cluster.cfg.mlflow.model_name}@champion",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert (Path(answer.stdout.strip().splitlines()[-1]) / "MLmodel").exists()
