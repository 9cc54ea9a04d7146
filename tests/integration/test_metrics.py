"""Both streaming jobs serve /metrics while they run, and jobs.status shows them.

The jobs run as they do in production (``python -m jobs.<job>``, live triggers) on their
own ports; the test sends simulated events with a few malformed records, scrapes both
endpoints once the streams have caught up, and checks each value against what the run
did: the records sent, the reasons they were quarantined for, the broker's end offsets,
the newest event time, the rows and bands in ``churn_scores`` and the model version.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import functions as F

from infra.config import REPO_ROOT, MetricsPorts
from infra.kafka_io import EndOffsets
from jobs.status import endpoint, scrape
from scoring.sink import ScoreSink, scores_path
from sources.simulator import SimulationConfig, simulate
from store.tables import FeatureStore
from tests.conftest import free_port
from tests.integration.streaming import (
    champion,
    scores_config,
    send,
    start,
    stop_gracefully,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

BAD = [(b"u-1", b"not json", "not_json")] * 3 + [(None, b'{"event_id": "x"}', "null_key")] * 2


def status(config) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.status", "--config", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_both_streams_serve_metrics_that_match_what_they_did(
    kafka_stack, mlflow_stack, base_config, spark, tmp_path
):
    cfg = scores_config(base_config, tmp_path, mlflow_stack.mlflow_uri)
    ports = MetricsPorts(stream_features=free_port(), stream_scores=free_port())
    cfg = cfg.model_copy(
        update={"monitoring": cfg.monitoring.model_copy(update={"metrics_port": ports})}
    )
    config = write_config(cfg, tmp_path / "metrics.yaml")
    champion(cfg)
    events = list(simulate(SimulationConfig(n_users=40, days=14, seed=11)))
    records = [(e["user_id"].encode(), json.dumps(e).encode()) for e in events]
    send(cfg, records + [(k, v) for k, v, _ in BAD])
    sent = len(records) + len(BAD)

    logs = {job: tmp_path / f"{job}.log" for job in ("stream_features", "stream_scores")}
    procs = {job: start(job, config, log) for job, log in logs.items()}
    alive = [(procs[j], logs[j]) for j in procs]
    features_url, scores_url = (endpoint(cfg, j) for j in procs)
    try:
        wait_for(
            lambda: scrape(features_url).value("churn_input_records_total") == sent,
            "the feature stream to count every record",
            alive=alive,
        )
        store = FeatureStore(cfg.storage.warehouse)
        users = store.read(spark, "user_features").select("user_id").distinct().count()
        wait_for(
            lambda: (
                (scrape(scores_url).value("churn_emitted_records_total") or 0) >= users
                and scrape(scores_url).value("churn_source_lag_versions") == 0
            ),
            "the scorer to catch up",
            alive=alive,
        )
        f, s = scrape(features_url), scrape(scores_url)

        # The feature stream: records by outcome, lag against the broker, freshness.
        quarantined = Counter(reason for _, _, reason in BAD)
        assert f.value("churn_valid_records_total") == len(records)
        assert f.by("churn_quarantined_records_total", "reason") == dict(quarantined)
        batches = store.read(spark, "feature_batches")
        assert f.value("churn_batches_total") == batches.count()
        assert f.value("churn_last_batch_id") == batches.agg(F.max("batch_id")).first()[0]
        ends = EndOffsets(cfg.kafka, "admin")(cfg.kafka.topics.events)
        assert ends[0] == sent
        lag = {labels["partition"]: v for labels, v in f.samples["churn_consumer_lag_records"]}
        assert lag == {str(p): 0.0 for p in ends}
        newest = max(datetime.fromisoformat(e["event_time"]) for e in events)
        assert f.value("churn_event_clock_timestamp_seconds") == pytest.approx(
            newest.timestamp(), abs=0.001
        )
        as_of = datetime.combine(newest.date() + timedelta(days=1), datetime.min.time(), UTC)
        assert f.value("churn_feature_as_of_timestamp_seconds") == as_of.timestamp()
        assert f.value("churn_feature_age_seconds") > 0
        assert f.value("churn_batch_duration_seconds_count") == batches.count()
        assert f.samples.get("churn_dq_violations_total", []) == []  # clean simulated data

        # The scorer: records by band and status, the model, the table it wrote.
        table = ScoreSink(scores_path(cfg.storage.warehouse)).read(spark)
        bands = {
            r["risk_band"]: r["n"]
            for r in table.where(F.col("status") == "scored")
            .groupBy("risk_band")
            .agg(F.count(F.lit(1)).alias("n"))
            .collect()
        }
        assert s.by("churn_scores_total", "band") == bands
        assert s.value("churn_emitted_records_total") == table.count()
        assert s.value("churn_lapsed_total") == table.where(F.col("status") == "lapsed").count()
        [(labels, version)] = s.samples["churn_model_version"]
        assert labels["model"] == cfg.mlflow.model_name and version == 1

        shown = status(config)
        print(shown.stdout)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert f"stream_features  up    {features_url}" in shown.stdout
        assert f"  lag             0 records ({cfg.kafka.topics.events}[0] 0," in shown.stdout
        assert f"{len(records):,} valid, {len(BAD)} quarantined" in shown.stdout
        assert "  data quality    no violations" in shown.stdout
        assert f"  model           {cfg.mlflow.model_name} v1" in shown.stdout
        assert "  lag             0 table versions behind" in shown.stdout
    finally:
        for job, proc in procs.items():
            if proc.poll() is None:
                stop_gracefully(proc, logs[job])
    down = status(config)
    assert down.returncode == 1 and "stream_features  DOWN" in down.stdout, down.stdout
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
