"""MLflow on PostgreSQL (local_stack.mlflow_backend: postgresql): the stack starts its own
PostgreSQL server (Debian's package) beside Kafka and MLflow, and the demo's whole flow runs
on it: training logs its run, registers the model and moves the champion alias; the scorer
loads the champion and scores every user. The registry is then read in PostgreSQL itself, and
it outlives a restart of the stack."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from infra import stack as local_stack
from infra import stack_postgres
from infra.config import REPO_ROOT, Config, load_config
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class PgStack:
    cfg: Config
    config_path: Path
    stack: local_stack.Stack
    root: Path


@pytest.fixture(scope="module")
def pg() -> Iterator[PgStack]:
    # Run as root, PostgreSQL runs as `postgres`, which must reach its data directory: pytest's
    # temporary directories are private to root, so this one is made where others can pass.
    root = Path(tempfile.mkdtemp(prefix="churn-pg-"))
    root.chmod(0o755)
    state = root / "stack"
    kafka, controller, mlflow_port, pg_port = (free_port() for _ in range(4))
    overrides = {
        "kafka": {"bootstrap_servers": f"127.0.0.1:{kafka}"},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{mlflow_port}"},
        "storage": {"warehouse": str(root / "warehouse"), "checkpoints": str(root / "cp")},
        "training": {"state_dir": str(root / "training")},
        "spark": {"shuffle_partitions": 2},
        "local_stack": {
            "state_dir": str(state),
            "kafka_port": kafka,
            "kafka_controller_port": controller,
            "mlflow_port": mlflow_port,
            "mlflow_backend": "postgresql",
            "postgres_port": pg_port,
        },
    }
    config_path = root / "pg.yaml"
    config_path.write_text(
        yaml.safe_dump({"extends": str(REPO_ROOT / "conf" / "local.yaml"), **overrides})
    )
    cfg = load_config(config_path, environ={})
    stack = local_stack.Stack.from_config(cfg)
    try:
        local_stack.up(stack)
        yield PgStack(cfg, config_path, stack, root)
    finally:
        local_stack.down(stack)
        shutil.rmtree(root, ignore_errors=True)


def registry_rows(pg: PgStack) -> dict[str, list[tuple]]:
    """What MLflow's tables in PostgreSQL hold for the model, read with SQL."""
    import psycopg

    d = pg.stack.state_dir / stack_postgres.SERVICE
    dsn = stack_postgres.uri(d, pg.stack.host, pg.stack.postgres_port)
    name = pg.cfg.mlflow.model_name
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


def test_the_demo_trains_registers_and_scores_on_postgresql(pg):
    summary = pg.root / "summary.json"
    small = ["--users", "300", "--days", "90", "--summary", str(summary)]
    done = subprocess.run(
        [sys.executable, "-m", "jobs.demo", "--config", str(pg.config_path), *small],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    s = json.loads(summary.read_text())
    assert s["training"]["promoted"] and s["scores"]["users_scored"] == s["users"] > 0, s
    rows = registry_rows(pg)
    print(f"\nin PostgreSQL: {rows['versions']=} {rows['aliases']=} {len(rows['runs'])} runs")
    assert rows["versions"] and ("champion", rows["versions"][-1][0]) in rows["aliases"]
    assert any(run_id == rows["versions"][-1][1] for run_id, _ in rows["runs"])
    assert not (pg.stack.state_dir / "mlflow" / "mlflow.db").exists()  # no SQLite beside it


def test_the_registry_outlives_a_restart_of_the_stack(pg):
    from mlflow import MlflowClient

    before = registry_rows(pg)
    assert before["aliases"], "the demo test runs first and promotes a champion"
    local_stack.down(pg.stack)
    assert local_stack.running_pid(pg.stack, stack_postgres.SERVICE) is None
    local_stack.up(pg.stack)
    uri = pg.cfg.mlflow.tracking_uri
    champion = MlflowClient(uri, uri).get_model_version_by_alias(
        pg.cfg.mlflow.model_name, "champion"
    )
    assert ("champion", int(champion.version)) in before["aliases"]
    assert registry_rows(pg) == before
