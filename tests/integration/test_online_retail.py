"""A slice of the real Online Retail log: replayed through Kafka and the stream, and backfilled
from the files by the stream's batches, gives the same feature tables; rows without a
customer end in quarantine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from features.aggregates import DAILY_COLUMNS
from infra.kafka_io import ensure_topics, produce
from jobs.stream_features import ingest_rules
from sources.replay import ONLINE_RETAIL, replay
from store.backfill import backfill_log, log_records
from store.tables import FeatureStore
from tests.integration.streaming import run_stream, stream_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "online-retail"
DAYS = 12


@pytest.fixture
def day_files(tmp_path) -> Path:
    if not (DATA / "by-day").is_dir():
        pytest.skip(f"Online Retail log not found at {DATA} (see its README); skipping")
    folder = tmp_path / "by-day"
    folder.mkdir()
    for f in sorted((DATA / "by-day").glob("*.csv"))[:DAYS]:
        (folder / f.name).symlink_to(f)
    return folder


def test_online_retail_slice_streamed_equals_backfilled(
    kafka_stack, base_config, spark, tmp_path, day_files
):
    cfg = stream_config(base_config, tmp_path, "retail")
    cfg = cfg.model_copy(
        update={
            "stream_features": cfg.stream_features.model_copy(update={"max_value_bytes": 65536})
        }
    )
    ensure_topics(cfg.kafka, [cfg.kafka.topics.events], "admin")
    records = replay(day_files, ONLINE_RETAIL)
    stats = produce(
        cfg.kafka,
        cfg.kafka.topics.events,
        ((r.key, json.dumps(r.value).encode()) for r in records),
        label="retail",
    )
    assert stats.failed == 0
    run_stream(spark, cfg)
    streamed = FeatureStore(cfg.storage.warehouse)

    expected = records.stats
    assert expected.rows_read == stats.produced > 10_000
    quarantine = streamed.read(spark, "quarantine")
    assert quarantine.count() == expected.rejected
    assert (
        quarantine.where(F.col("reject_reason") == "null_key").count() == expected.rows_without_user
    )
    assert streamed.read(spark, "events").count() + quarantine.count() == expected.rows_read
    assert streamed.read(spark, "events").where(F.col("event_type") == "refund").count() > 0

    rebuilt = FeatureStore(str(tmp_path / "rebuilt"))
    raw = log_records(spark, [str(day_files)], ONLINE_RETAIL)
    results = backfill_log(spark, rebuilt, raw, ingest_rules(cfg), batch_records=5_000)
    assert [r.batch_id for r in results] == list(range(-len(results), 0)) and len(results) > 2
    assert rebuilt.read(spark, "quarantine").count() == expected.rejected
    assert rebuilt.read(spark, "events").count() == streamed.read(spark, "events").count()
    for table, cols in (
        ("user_activity_daily", list(DAILY_COLUMNS)),
        ("user_lifetime", None),
        ("user_features", None),
    ):
        a, b = streamed.read(spark, table), rebuilt.read(spark, table)
        if cols:
            a, b = a.select(*cols), b.select(*cols)
        assertDataFrameEqual(a, b)
