"""The secured stack (conf/secure.yaml, docs/security.md), started by this module in its own
state dir on free loopback ports: the secure demo end to end, the refusals each principal
meets, the broker's audit record of them, and no generated secret in anything the pipeline
writes or prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from infra import stack as local_stack
from infra.cli import Refused
from infra.config import REPO_ROOT, Config, load_config
from infra.kafka_io import client_config, ensure_topics, producer_config, spark_options
from infra.mlflow_io import acting_as
from infra.stack_security import READER_GROUP_PREFIX, read_env_file
from tests.conftest import NO_METRICS, free_port
from tests.integration import notebooks
from tests.integration.streaming import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class SecureStack:
    cfg: Config
    config_path: Path
    stack: local_stack.Stack
    secrets: dict[str, str]
    root: Path

    @property
    def passwords(self) -> dict[str, str]:
        """Every generated secret, by variable: what must never show anywhere."""
        return {k: v for k, v in self.secrets.items() if k.endswith(("_PASSWORD", "_SECRET_KEY"))}

    def env(self, **changes: str) -> dict[str, str]:
        return {**os.environ, **self.secrets, **changes}


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> Iterator[SecureStack]:
    """conf/secure.yaml with its state, tables and ports of its own; the stack it describes,
    started; its secrets in this process's environment for the module."""
    root = tmp_path_factory.mktemp("secure")
    state = root / "stack"
    kafka_port, controller, internal, mlflow_port = (free_port() for _ in range(4))
    overrides = {
        "kafka": {
            "bootstrap_servers": f"127.0.0.1:{kafka_port}",
            "security": {"ssl_ca_location": str(state / "tls" / "ca.pem")},
        },
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{mlflow_port}"},
        "storage": {"warehouse": str(root / "warehouse"), "checkpoints": str(root / "cp")},
        "training": {"state_dir": str(root / "training")},
        "spark": {
            "shuffle_partitions": 2,
            # Spark's event log holds every query plan: it is searched for secrets below,
            # uncompressed (Spark compresses it with zstd by default).
            "conf": {
                "spark.eventLog.enabled": "true",
                "spark.eventLog.dir": str(root / "events"),
                "spark.eventLog.compress": "false",
            },
        },
        "monitoring": NO_METRICS.model_dump(),
        "local_stack": {
            "state_dir": str(state),
            "kafka_port": kafka_port,
            "kafka_controller_port": controller,
            "kafka_internal_port": internal,
            "mlflow_port": mlflow_port,
        },
    }
    (root / "events").mkdir()
    config_path = root / "secure.yaml"
    config_path.write_text(
        yaml.safe_dump({"extends": str(REPO_ROOT / "conf" / "secure.yaml"), **overrides})
    )
    cfg = load_config(config_path, environ={})
    stack = local_stack.Stack.from_config(cfg)
    local_stack.up(stack)
    secrets = read_env_file(state / "secrets.env")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in secrets.items():
            mp.setenv(name, value)
        try:
            yield SecureStack(cfg, config_path, stack, secrets, root)
        finally:
            local_stack.down(stack)


@pytest.fixture(scope="module")
def demo(secure: SecureStack) -> dict[str, str]:
    """`make demo CONFIG=secure`'s job, small, as a process: its summary and its output."""
    summary = secure.root / "summary.json"
    small = ["--users", "300", "--days", "90", "--live-days", "28", "--live-step", "28"]
    small += ["--bad-every", "500", "--summary", str(summary)]
    done = subprocess.run(
        [sys.executable, "-m", "jobs.demo", "--config", str(secure.config_path), *small],
        cwd=REPO_ROOT,
        env=secure.env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"summary": summary.read_text(), "stdout": done.stdout, "stderr": done.stderr}


def test_the_secure_demo_runs_end_to_end_with_no_denial(secure, demo):
    s = json.loads(demo["summary"])
    ev = s["events"]
    assert ev["processed"] == ev["produced"] == ev["valid"] + ev["quarantined"]
    assert ev["quarantined"] > 0  # the DLQ path, written by churn-features
    assert 0 < s["scores"]["users_scored"] == s["scores"]["users_in_population"] < s["users"]
    assert s["training"]["promoted"] is True
    print("\n" + demo["stdout"][demo["stdout"].index("=== churn pipeline demo ===") :])
    # Every job asked only for what its principal may do: the authorizer denied nothing.
    audit = secure.stack.path("kafka", "authorizer.log")
    assert not audit.exists() or "Denied" not in audit.read_text()


# --- refusals ------------------------------------------------------------------------------

DENIALS = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)


def _admin_refusal(conf: dict) -> str:
    """What a client with these settings meets asking for the cluster's metadata."""
    errors: list[KafkaError] = []
    admin = AdminClient({**conf, "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException) as refused:
        admin.list_topics(timeout=5)
    admin.poll(0.5)
    return "; ".join([refused.value.args[0].str(), *(e.str() for e in errors[:1])])


def test_a_client_without_credentials_is_refused(secure):
    ca = secure.cfg.kafka.security.ssl_ca_location
    said = _admin_refusal(
        {
            "bootstrap.servers": secure.cfg.kafka.bootstrap_servers,
            "security.protocol": "SSL",
            "ssl.ca.location": ca,
        }
    )
    print(f"\nno credentials (TLS only): {said}")
    assert "Broker transport failure" in said


def test_a_plaintext_connection_to_the_tls_listener_fails(secure):
    said = _admin_refusal({"bootstrap.servers": secure.cfg.kafka.bootstrap_servers})
    print(f"\nplaintext: {said}")
    assert "Broker transport failure" in said


def test_a_wrong_password_is_refused_in_one_line_without_the_password(secure, monkeypatch):
    wrong = "not-the-password-0123456789"
    monkeypatch.setenv("CHURN_READER_PASSWORD", wrong)
    with pytest.raises(Refused) as refused:
        ensure_topics(secure.cfg.kafka, [secure.cfg.kafka.topics.scores], "reader", timeout_s=5)
    message = str(refused.value)
    print(f"\nwrong password: {message}")
    assert "refused the reader principal's credentials" in message
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in message
    assert wrong not in message and secure.secrets["CHURN_READER_PASSWORD"] not in message


def test_the_scorer_cannot_read_events_and_the_producer_cannot_write_scores(secure, demo, spark):
    kafka, topics = secure.cfg.kafka, secure.cfg.kafka.topics
    reports: list[str | None] = []

    def send(role: str, topic: str) -> str | None:
        producer = Producer(producer_config(kafka, role, **{"message.timeout.ms": 15000}))
        producer.produce(topic, b"x", on_delivery=lambda err, _m: reports.append(err and err.str()))
        assert producer.flush(30) == 0
        return reports.pop()

    assert send("scorer", topics.scores) is None  # a principal writes where it may
    denied_write = send("producer", topics.scores)
    print(f"\nchurn-producer -> {topics.scores}: {denied_write}")
    assert denied_write == "Broker: Topic authorization failed"

    def errors_reading(role: str, topic: str, group: str) -> list[KafkaError]:
        """The errors a consumer meets until its first record or first denial."""
        consumer = Consumer(
            client_config(kafka, role) | {"group.id": group, "auto.offset.reset": "earliest"}
        )
        consumer.subscribe([topic])
        met: list[KafkaError] = []
        try:
            for _ in range(60):
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    return met
                if msg is not None:
                    met.append(msg.error())
                    if msg.error().code() in DENIALS:
                        return met
            raise AssertionError(f"{role} got neither a record nor a denial from {topic}: {met}")
        finally:
            consumer.close()

    assert errors_reading("reader", topics.scores, f"{READER_GROUP_PREFIX}-test") == []
    # librdkafka's consumer needs a group, and the scorer has none: refused at the door.
    denied = errors_reading("scorer", topics.events, "churn-scorer-test")
    print(f"churn-scorer <- {topics.events}: {'; '.join(e.str() for e in denied)}")
    assert denied[-1].code() == KafkaError.GROUP_AUTHORIZATION_FAILED

    # Spark's Kafka source (the Java client: PEM truststore, JAAS from the environment).
    def spark_count(role: str) -> int:
        return (
            spark.read.format("kafka")
            .options(**spark_options(kafka, role))
            .option("subscribe", topics.events)
            .load()
            .count()
        )

    assert spark_count("features") == json.loads(demo["summary"])["events"]["processed"]
    with pytest.raises(Exception, match="TopicAuthorizationException") as spark_denied:
        spark_count("scorer")
    cause = str(spark_denied.value).splitlines()[-1]
    print(f"Spark as churn-scorer <- {topics.events}: {cause}")

    # The audit record: the broker's authorizer log names principal, operation, resource.
    audit = secure.stack.path("kafka", "authorizer.log")

    def denials() -> list[str]:
        text = audit.read_text() if audit.exists() else ""
        return [line for line in text.splitlines() if " is Denied operation = " in line]

    def names(principal: str, resource: str) -> list[str]:
        return [
            line
            for line in denials()
            if f"Principal = User:{principal} is Denied" in line
            and f"on resource = Topic:LITERAL:{resource} " in line
        ]

    wait_for(
        lambda: names("churn-producer", topics.scores) and names("churn-scorer", topics.events),
        "both denials in the authorizer log",
        timeout_s=30,
    )
    print("audit:\n" + "\n".join(denials()))


def test_mlflow_refuses_anonymous_requests_and_the_scorer_cannot_register(secure, demo):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri, name = secure.cfg.mlflow.tracking_uri, secure.cfg.mlflow.model_name
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(
            f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=churn", timeout=10
        )
    print(f"\nanonymous: {anonymous.value.code} {anonymous.value.read().decode()[:80]}")
    assert anonymous.value.code == 401
    with acting_as(secure.cfg.mlflow, "scorer"):
        client = MlflowClient(uri, uri)
        champion = client.get_model_version_by_alias(name, "champion")  # it may read
        model_id = champion.source.removeprefix("models:/")  # the run's logged model, m-...
        same = {"source": champion.source, "run_id": champion.run_id, "model_id": model_id}
        with pytest.raises(MlflowException) as denied:
            client.create_model_version(name, **same)
    print(f"scorer registers a version: {denied.value.error_code}: {denied.value.message}")
    assert denied.value.error_code == "PERMISSION_DENIED"
    with acting_as(secure.cfg.mlflow, "trainer"):  # the same request from the trainer passes
        client = MlflowClient(uri, uri)
        version = client.create_model_version(name, **same)
    with acting_as(secure.cfg.mlflow, "admin"):  # deleting one is beyond EDIT: MANAGE's
        MlflowClient(uri, uri).delete_model_version(name, version.version)


def test_provision_mlflow_puts_back_a_grant_changed_on_the_server(secure):
    """`churn-stack provision-mlflow` provisions a server it did not start (Kubernetes,
    docs/deploy.md) from the env vars alone: a scorer given EDIT out of band is READ again."""
    import requests

    uri, name = secure.cfg.mlflow.tracking_uri, secure.cfg.mlflow.model_name
    s = secure.secrets
    admin = (s["CHURN_MLFLOW_ADMIN_USERNAME"], s["CHURN_MLFLOW_ADMIN_PASSWORD"])
    scorer = s["CHURN_MLFLOW_SCORER_USERNAME"]
    key = {"username": scorer, "resource_type": "registered_model", "resource_id": name}
    api = f"{uri}/api/3.0/mlflow/users/permissions"
    requests.post(f"{api}/revoke", json=key, auth=admin, timeout=30).raise_for_status()
    requests.post(
        f"{api}/grant", json={**key, "permission": "EDIT"}, auth=admin, timeout=30
    ).raise_for_status()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.stack",
            "--config",
            str(secure.config_path),
            "provision-mlflow",
        ],
        cwd=REPO_ROOT,
        env=secure.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(f"\nprovision-mlflow: {done.stdout.strip()}")
    assert done.returncode == 0, done.stderr
    assert f"{scorer} READ on registered_model {name}" in done.stdout
    got = requests.get(f"{api}/get", params=key, auth=admin, timeout=30)
    assert got.json()["permission"] == "READ", got.text


def test_kafkas_tools_run_as_the_admin_over_sasl_ssl(secure, capfd):
    assert local_stack.run_kafka_tool(secure.stack, "kafka-topics", ["--list"]) == 0
    listed = set(capfd.readouterr().out.split())
    topics = secure.cfg.kafka.topics
    assert {topics.events, topics.dlq, topics.scores} <= listed


@pytest.mark.parametrize("notebook", notebooks.NOTEBOOKS, ids=notebooks.IDS)
def test_notebook_runs_against_the_secure_demo(secure, demo, notebook):
    """Each notebook top to bottom in a real kernel, reading the secured demo's tables and
    MLflow (as the read-only user); the executed copy is kept for the secret search."""
    notebooks.execute(notebook, secure.cfg, secure.config_path, secure.root / "notebooks")


# --- no secret anywhere --------------------------------------------------------------------


def _files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.exists():
            yield from (p for p in root.rglob("*") if p.is_file())


def test_no_generated_secret_shows_in_any_output(secure, demo, tmp_path):
    """Every generated password (and the MLflow server's key) is searched for in: the demo's
    stdout and stderr, a job's refusal, MLflow's params, tags and artifacts, Spark's event log
    (query plans included), the Delta tables' commit info and the checkpoints, the broker's
    and MLflow's logs, and the executed notebooks (when their tests ran first)."""
    passwords = secure.passwords
    assert len(passwords) == 5 + 3 + 1
    texts: dict[str, bytes] = {
        "demo stdout": demo["stdout"].encode(),
        "demo stderr": demo["stderr"].encode(),
    }
    refused = subprocess.run(
        [sys.executable, "-m", "jobs.stream_features", "--config", str(secure.config_path)],
        cwd=REPO_ROOT,
        env=secure.env(CHURN_FEATURES_PASSWORD="a-wrong-one-0123456789"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 1 and "refused the features principal's" in refused.stderr
    texts["a refused job's output"] = (refused.stdout + refused.stderr).encode()

    import mlflow
    from mlflow import MlflowClient

    uri = secure.cfg.mlflow.tracking_uri
    with acting_as(secure.cfg.mlflow, "trainer"):
        client = MlflowClient(uri, uri)
        experiment = client.get_experiment_by_name(secure.cfg.mlflow.experiment)
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id])
        assert runs
        for run in runs:
            texts[f"run {run.info.run_id} params and tags"] = json.dumps(
                [run.data.params, run.data.tags]
            ).encode()
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, dst_path=str(tmp_path / run.info.run_id), tracking_uri=uri
            )
    artifacts = list(_files(tmp_path))
    event_logs = list(_files(secure.root / "events"))
    tables = list(_files(secure.root / "warehouse", secure.root / "cp"))
    executed = list(_files(secure.root / "notebooks"))
    # *.log: the services' logs, and the topics' segment files (the records themselves).
    logs = list(_files(*(secure.stack.state_dir / s for s in ("kafka", "mlflow"))))
    logs = [p for p in logs if p.suffix == ".log"]
    assert artifacts and event_logs and logs
    assert any(p.match("_delta_log/*.json") for p in tables)
    # The plans in the event log carry the Kafka options, the JAAS line redacted by Spark.
    plans = b"".join(p.read_bytes() for p in event_logs)
    assert b"kafka.sasl.jaas.config=*********(redacted)" in plans
    for group in (artifacts, event_logs, tables, logs, executed):
        for path in group:
            texts[str(path)] = path.read_bytes()
    found = [
        f"{var} in {where}"
        for where, text in texts.items()
        for var, secret in passwords.items()
        if secret.encode() in text
    ]
    print(
        f"\nsearched {len(texts)} outputs ({len(artifacts)} artifacts, {len(event_logs)} event "
        f"logs, {len(tables)} table and checkpoint files, {len(logs)} service logs and topic "
        f"segments, {len(executed)} executed notebooks) for "
        f"{len(passwords)} secrets: {len(found)} found"
    )
    assert not found
    # The search finds a secret where one is meant to be: the broker's own settings file.
    server_properties = secure.stack.path("kafka", "server.properties")
    assert passwords["CHURN_ADMIN_PASSWORD"].encode() in server_properties.read_bytes()
    assert server_properties.stat().st_mode & 0o777 == 0o600
    assert (secure.stack.state_dir / "secrets.env").stat().st_mode & 0o777 == 0o600
