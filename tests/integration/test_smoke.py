"""Smoke test of the real stack: confluent-kafka -> Structured Streaming -> Delta; MLflow over HTTP."""

import json
import uuid

import pytest
from confluent_kafka import Producer
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from infra.kafka_io import ensure_topics, producer_config, spark_options

pytestmark = pytest.mark.integration


def test_events_flow_from_kafka_through_a_stream_into_delta(
    kafka_stack, base_config, spark, tmp_path
):
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    ensure_topics(base_config.kafka, [topic], "admin")
    producer = Producer(producer_config(base_config.kafka, "producer"))
    sent = [(f"u{i % 3}", {"event_id": f"e{i}", "n": i}) for i in range(20)]
    for key, value in sent:
        producer.produce(topic, key=key.encode(), value=json.dumps(value).encode())
    assert producer.flush(30) == 0

    table = str(tmp_path / "events")
    query = (
        spark.readStream.format("kafka")
        .options(**spark_options(base_config.kafka, "features"))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .select(
            F.col("key").cast("string").alias("key"),
            F.get_json_object(F.col("value").cast("string"), "$.event_id").alias("event_id"),
            F.get_json_object(F.col("value").cast("string"), "$.n").cast("int").alias("n"),
        )
        .writeStream.format("delta")
        .option("checkpointLocation", str(tmp_path / "chk"))
        .trigger(availableNow=True)
        .start(table)
    )
    try:
        query.awaitTermination(180)
    finally:
        query.stop()
    expected = spark.createDataFrame(
        [(k, v["event_id"], v["n"]) for k, v in sent], "key string, event_id string, n int"
    )
    assertDataFrameEqual(spark.read.format("delta").load(table), expected)


def test_a_run_logged_to_the_server_reads_back_over_http(mlflow_stack):
    import urllib.request

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_stack.mlflow_uri)
    exp_id = client.create_experiment(f"smoke-{uuid.uuid4().hex[:8]}")
    run = client.create_run(exp_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    client.log_metric(run.info.run_id, "auc", 0.75)
    client.set_terminated(run.info.run_id)

    url = f"{mlflow_stack.mlflow_uri}/api/2.0/mlflow/runs/get?run_id={run.info.run_id}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        data = json.load(resp)["run"]
    assert data["info"]["status"] == "FINISHED"
    assert data["data"]["params"] == [{"key": "alpha", "value": "0.5"}]
    assert [(m["key"], m["value"]) for m in data["data"]["metrics"]] == [("auc", 0.75)]
