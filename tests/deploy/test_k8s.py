"""deploy/k8s: every kustomization renders, each resource fits its schema (Kubernetes' or
the operator's CRD), no secret is inline, and the manifests agree with the code: the jobs'
config loads, the topics and ACLs are those of the secured local stack, and each job's pod
sets the credentials its role reads."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from infra import k8s
from infra.config import load_config
from infra.stack_security import READER_GROUP_PREFIX, kafka_acls

KUSTOMIZATIONS = k8s.overlays()


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=[p.name for p in KUSTOMIZATIONS])
def rendered(request) -> tuple[Path, list[dict]]:
    return request.param, k8s.render(request.param)


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def test_every_resource_fits_its_schema_and_holds_no_secret(rendered, capsys):
    directory, docs = rendered
    with capsys.disabled():
        print(f"\n{directory.relative_to(k8s.REPO_ROOT)}:")
        _, bad = k8s.validate(directory)
    assert bad == 0
    kinds = {d["kind"] for d in docs}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "SparkApplication"} <= kinds
    assert {"CronJob", "Deployment", "StatefulSet", "Job", "Service", "ConfigMap"} <= kinds
    assert "Secret" not in kinds  # made outside the manifests (docs/deploy.md)


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        ("SparkApplication", lambda d: d["spec"]["executor"].update(instance=3), "instance"),
        ("SparkApplication", lambda d: d["spec"].update(mode="local"), "'local' is not one of"),
        (
            "KafkaUser",
            lambda d: d["spec"].update(authentication={"type": "scram-sha-256"}),
            "scram-sha-256",
        ),
        ("Kafka", lambda d: d["spec"]["kafka"].pop("listeners"), "'listeners' is a required"),
        ("KafkaTopic", lambda d: d["spec"].update(partitions=0), "minimum"),
        ("CronJob", lambda d: d["spec"].update(schedules="0 3 * * *"), "schedules"),
        ("StatefulSet", lambda d: d["spec"].update(replicas="one"), "'one' is not of type"),
        (
            "Deployment",
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].append(
                {"name": "DB_PASSWORD", "value": "hunter2"}
            ),
            "DB_PASSWORD has a literal value",
        ),
        (
            "ConfigMap",
            lambda d: d.update(kind="Secret", stringData={"password": "hunter2"}),
            "Secret with its data inline",
        ),
    ],
    ids=[
        "typo",
        "enum",
        "crd-enum",
        "crd-required",
        "crd-minimum",
        "core-typo",
        "core-type",
        "inline-env",
        "inline-secret",
    ],
)
def test_a_broken_resource_is_a_problem(kind, change, expected):
    docs = k8s.render(k8s.K8S_DIR / "base")
    doc = copy.deepcopy(next(d for d in docs if d["kind"] == kind))
    assert k8s.problems(doc)[1] == []
    change(doc)
    _, found = k8s.problems(doc)
    assert any(expected in p for p in found), found


def test_the_jobs_config_loads_and_matches_the_kafka_resources(rendered, tmp_path):
    """The ConfigMap's files, as the pods see them, through the jobs' loader; the topics,
    partitions and ACLs the manifests declare are the config's and the secured stack's."""
    _, docs = rendered
    for key, text in one(docs, "ConfigMap", "churn-config")["data"].items():
        (tmp_path / key).write_text(text)
    cfg = load_config(tmp_path / "churn.yaml", environ={})
    assert cfg.storage.warehouse.startswith("s3a://") and cfg.stream_features.id_index_dir
    assert cfg.spark.master is None  # the SparkApplication's
    topics = cfg.kafka.topics
    declared = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    assert set(declared) == {topics.events, topics.dlq, topics.scores}
    assert declared[topics.events]["partitions"] == cfg.kafka.partitions
    users = {role: f"churn-{role}" for role in ("producer", "features", "scorer", "reader")}
    ops = {"Read": "READ", "Write": "WRITE"}
    acls = {
        (
            d["metadata"]["name"],
            a["resource"]["type"].upper(),
            a["resource"]["name"],
            {"literal": "LITERAL", "prefix": "PREFIXED"}[a["resource"]["patternType"]],
            ops[op],
        )
        for d in docs
        if d["kind"] == "KafkaUser" and "authorization" in d["spec"]
        for a in d["spec"]["authorization"]["acls"]
        for op in a["operations"]
    }
    assert acls == set(kafka_acls((topics.events, topics.dlq, topics.scores), users))
    assert READER_GROUP_PREFIX == "churn-reader"
    kafka = one(docs, "Kafka", "churn")["spec"]["kafka"]
    assert kafka["authorization"]["superUsers"] == ["churn-admin"]
    assert cfg.kafka.bootstrap_servers.startswith("churn-kafka-bootstrap:")
    assert cfg.kafka.security.sasl_mechanism == "SCRAM-SHA-512"
    assert all(li["authentication"]["type"] == "scram-sha-512" for li in kafka["listeners"])


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize(
    ("kind", "name", "kafka_role", "mlflow_roles"),
    [
        ("SparkApplication", "churn-stream-features", "features", ()),
        ("SparkApplication", "churn-stream-scores", "scorer", ("scorer",)),
        ("CronJob", "churn-train", None, ("trainer",)),
        # it sets the others' passwords in MLflow's user store
        ("Job", "churn-mlflow-provision", None, ("admin", "trainer", "scorer")),
    ],
)
def test_each_job_gets_its_roles_credentials_from_secrets(kind, name, kafka_role, mlflow_roles):
    directory = k8s.K8S_DIR / "base"
    docs = k8s.render(directory)
    cfg = load_config(directory / "base.yaml", environ={})
    doc = one(docs, kind, name)
    if kind == "SparkApplication":
        env = _env(doc["spec"]["driver"])
    else:
        pod = doc["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else doc["spec"]
        env = _env(pod["template"]["spec"]["containers"][0])
    wanted = []
    if kafka_role:
        wanted.append(cfg.kafka.security.principals[kafka_role])
    wanted += [cfg.mlflow.credentials[role] for role in mlflow_roles]
    for creds in wanted:
        assert creds.username_env in env, (name, creds.username_env)
        assert env[creds.password_env]["valueFrom"]["secretKeyRef"]["name"], name
    other = {
        c.password_env
        for c in [*cfg.kafka.security.principals.values(), *cfg.mlflow.credentials.values()]
    } - {c.password_env for c in wanted}
    assert not other & set(env), f"{name} holds another role's password: {other & set(env)}"
