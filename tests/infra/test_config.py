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
        client_config(cfg.kafka)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHURN_KAFKA_SASL_USERNAME", "svc")
        mp.setenv("CHURN_KAFKA_SASL_PASSWORD", "s3cr3t-value")
        conf = producer_config(cfg.kafka)
        assert (conf["sasl.username"], conf["sasl.password"]) == ("svc", "s3cr3t-value")
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert 'password="s3cr3t-value"' in spark_options(cfg.kafka)["kafka.sasl.jaas.config"]
        # The config itself, its repr and its loggable form never hold the secret.
        assert "s3cr3t-value" not in repr(cfg) + str(cfg.redacted())
        assert "s3cr3t-value" not in repr(cfg.kafka.security.credentials())


def test_producer_defaults_are_the_throughput_ones():
    conf = producer_config(load_config("local", environ={}).kafka)
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
