import os
from pathlib import Path

import pytest

from infra.config import ConfigError, env_overrides, load_config
from infra.kafka_io import client_config, producer_config, spark_options


def test_local_config_loads_with_documented_defaults():
    cfg = load_config("local", environ={})
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.kafka.topics.model_dump() == {
        "events": "behaviour-events",
        "dlq": "behaviour-events-dlq",
        "scores": "churn-scores",
    }
    assert (cfg.local_stack.kafka_port, cfg.local_stack.mlflow_port) == (9092, 5000)


def test_env_overrides_are_nested_and_typed():
    assert env_overrides(
        {
            "CHURN__SPARK__SHUFFLE_PARTITIONS": "8",
            "OTHER": "x",
            "CHURN__KAFKA__TOPICS__EVENTS": "ev",
        }
    ) == {
        "spark": {"shuffle_partitions": 8},
        "kafka": {"topics": {"events": "ev"}},
    }
    cfg = load_config("local", environ={"CHURN__KAFKA__BOOTSTRAP_SERVERS": "broker:9094"})
    assert cfg.kafka.bootstrap_servers == "broker:9094"


def test_unknown_key_and_wrong_value_are_named(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  partitons: 3\nlocal_stack:\n  kafka_port: 80\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, environ={})
    msg = str(err.value)
    assert "kafka.partitons: unknown key" in msg
    assert "local_stack.kafka_port: Input should be greater than or equal to 1024 (got 80)" in msg


def test_env_override_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions: .*valid integer.*'many'"):
        load_config("local", environ={"CHURN__SPARK__SHUFFLE_PARTITIONS": "many"})


def test_missing_file_and_non_mapping(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("no-such-env", environ={})
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(lst, environ={})


def test_sasl_needs_a_mechanism():
    with pytest.raises(ConfigError, match=r"kafka\.security: .*SASL_SSL needs sasl_mechanism"):
        load_config("local", environ={"CHURN__KAFKA__SECURITY__PROTOCOL": "SASL_SSL"})


def test_sasl_credentials_come_from_env_and_never_show():
    env = {
        "CHURN__KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
        "CHURN__KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
    }
    cfg = load_config("local", environ=env)
    with pytest.raises(
        ConfigError, match="CHURN_KAFKA_SASL_USERNAME and CHURN_KAFKA_SASL_PASSWORD"
    ):
        client_config(cfg.kafka, "producer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHURN_KAFKA_SASL_USERNAME", "svc")
        mp.setenv("CHURN_KAFKA_SASL_PASSWORD", "s3cr3t-value")
        conf = producer_config(cfg.kafka, "producer")
        assert (conf["sasl.username"], conf["sasl.password"]) == ("svc", "s3cr3t-value")
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        jaas = spark_options(cfg.kafka, "features")["kafka.sasl.jaas.config"]
        assert 'password="s3cr3t-value"' in jaas
        # The config itself, its repr and its loggable form never hold the secret.
        assert "s3cr3t-value" not in repr(cfg) + str(cfg.redacted())
        assert "s3cr3t-value" not in repr(cfg.kafka.security.credentials("producer"))


def test_each_role_connects_as_its_own_principal():
    cfg = load_config("secure", environ={})
    env = {
        f"CHURN_{role.upper()}_{part}": f"{role}-{part.lower()}"
        for role in ("admin", "producer", "features", "scorer", "reader")
        for part in ("USERNAME", "PASSWORD")
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        for role in ("admin", "producer", "features", "scorer", "reader"):
            conf = client_config(cfg.kafka, role)
            assert (conf["sasl.username"], conf["sasl.password"]) == (
                f"{role}-username",
                f"{role}-password",
            )
        assert (
            'username="scorer-username"'
            in spark_options(cfg.kafka, "scorer")["kafka.sasl.jaas.config"]
        )
        mp.delenv("CHURN_READER_PASSWORD")
        with pytest.raises(ConfigError, match=r"\(as reader\) needs .*CHURN_READER_PASSWORD"):
            client_config(cfg.kafka, "reader")


def test_the_java_client_reads_the_ca_as_pem():
    """The Java client takes a truststore for JKS unless told its type: a PEM CA file then
    fails every TLS handshake (Spark's Kafka source and sink are Java clients)."""
    cfg = load_config("local", environ={"CHURN__KAFKA__SECURITY__SSL_CA_LOCATION": "/ca.pem"})
    opts = spark_options(cfg.kafka, "features")
    assert opts["kafka.ssl.truststore.type"] == "PEM"
    assert opts["kafka.ssl.truststore.location"] == "/ca.pem"
    assert client_config(cfg.kafka, "features")["ssl.ca.location"] == "/ca.pem"


def test_producer_defaults_are_the_throughput_ones():
    conf = producer_config(load_config("local", environ={}).kafka, "producer")
    assert {
        k: conf[k]
        for k in (
            "compression.type",
            "linger.ms",
            "batch.size",
            "max.in.flight.requests.per.connection",
            "enable.idempotence",
        )
    } == {
        "compression.type": "lz4",
        "linger.ms": 50,
        "batch.size": 65536,
        "max.in.flight.requests.per.connection": 5,
        "enable.idempotence": True,
    }


def test_a_config_extends_another(tmp_path):
    secure = load_config("secure", environ={})
    local = load_config("local", environ={})
    assert secure.local_stack.secure and not local.local_stack.secure
    assert secure.training == local.training  # everything it does not set comes from local
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\nenv: a\n")
    b.write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="goes round in a circle"):
        load_config(a, environ={})
    b.write_text("extends: nowhere\n")
    with pytest.raises(ConfigError, match=r"config file not found: .*nowhere\.yaml"):
        load_config(a, environ={})


def test_a_secure_stack_needs_clients_that_speak_its_protocol():
    with pytest.raises(ConfigError, match=r"local_stack\.secure starts Kafka with SASL_SSL"):
        load_config("secure", environ={"CHURN__KAFKA__SECURITY__PROTOCOL": "SSL"})


def test_mlflow_requests_act_as_the_role_and_the_environment_comes_back(monkeypatch):
    from infra.mlflow_io import acting_as

    cfg = load_config("secure", environ={})
    monkeypatch.setenv("CHURN_MLFLOW_SCORER_USERNAME", "churn-scorer")
    monkeypatch.setenv("CHURN_MLFLOW_SCORER_PASSWORD", "pw")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with acting_as(cfg.mlflow, "scorer"):
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "churn-scorer"
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "pw"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "someone"
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    with (
        pytest.raises(ConfigError, match=r"mlflow\.credentials\.trainer needs"),
        acting_as(cfg.mlflow, "trainer"),
    ):
        pass


@pytest.mark.parametrize(
    "given",
    [
        "s3a://bucket/churn",
        "s3a://bucket/churn/",
        "abfss://lake@account.dfs.core.windows.net/churn",
        "hdfs://namenode:8020/churn",
        "file:///data/churn",
    ],
)
def test_a_remote_location_passes_through_untouched(given):
    cfg = load_config("local", environ={"CHURN__STORAGE__WAREHOUSE": given})
    assert cfg.warehouse_location() == given.rstrip("/")
    assert cfg.location(given, "user_features") == f"{given.rstrip('/')}/user_features"


def test_a_local_location_resolves_against_the_repository(tmp_path):
    cfg = load_config("local", environ={})
    root = str(Path(__file__).resolve().parents[2])
    assert cfg.warehouse_location() == f"{root}/.local/warehouse"
    assert cfg.checkpoint_location("q") == f"{root}/.local/checkpoints/q"
    assert cfg.location(str(tmp_path), "a", "b") == f"{tmp_path}/a/b"
    assert cfg.local_dir(f"file://{tmp_path}") == tmp_path
    assert cfg.local_dir("s3a://bucket/cp") is None


def test_remote_checkpoints_need_a_local_folder_for_the_id_index():
    remote = {"CHURN__STORAGE__CHECKPOINTS": "s3a://bucket/checkpoints"}
    with pytest.raises(ConfigError, match=r"set stream_features\.id_index_dir"):
        load_config("local", environ=remote)
    cfg = load_config("local", environ={**remote, "CHURN__STREAM_FEATURES__ID_INDEX_DIR": "/x"})
    assert cfg.checkpoint_location("stream_features") == "s3a://bucket/checkpoints/stream_features"
    load_config("local", environ={"CHURN__STORAGE__CHECKPOINTS": "file:///tmp/cp"})  # local


def test_no_job_builds_a_storage_path_as_a_local_path():
    """Storage paths go through Config.location (a URI as given); ``resolve`` (a local
    Path) would turn s3a://bucket into <repo>/s3a:/bucket."""
    import ast

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("jobs", "training", "scoring", "store", "features", "infra"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "resolve"
                    and any("storage" in ast.unparse(arg) for arg in node.args)
                ):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders


def test_postgres_port_must_not_clash_once_mlflow_runs_on_postgresql():
    clash = {
        "CHURN__LOCAL_STACK__MLFLOW_BACKEND": "postgresql",
        "CHURN__LOCAL_STACK__POSTGRES_PORT": "5000",
    }
    with pytest.raises(ConfigError, match="postgres_port 5000, spark_master_port"):
        load_config("local", environ=clash)
    # on SQLite the port is unused, so it may be anything
    load_config("local", environ={"CHURN__LOCAL_STACK__POSTGRES_PORT": "5000"})


def test_the_spark_masters_ports_must_not_clash_with_the_stacks():
    clash = {"CHURN__LOCAL_STACK__SPARK_MASTER_WEBUI_PORT": "5000"}
    with pytest.raises(ConfigError, match=r"mlflow_port 5000.*spark_master_webui_port 5000"):
        load_config("local", environ=clash)
