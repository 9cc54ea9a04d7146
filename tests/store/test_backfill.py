"""The backfill from a log runs the stream's batches over the files (docs/decisions.md 36)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pyspark.sql import functions as F

from sources.replay import ReplayMapping, replay
from store.backfill import FILE_STRIDE, backfill_log, log_records, offset_ranges
from store.ingest import IngestRules
from store.tables import FeatureStore

MAPPING = ReplayMapping(user_id="uid", event_time="ts", event_type="kind", event_id="id")


def test_offset_ranges_cut_the_log_in_order_across_files():
    assert offset_ranges({0: 5, 1: 3, 3: 4}, 4) == [
        (0, 4),
        (4, FILE_STRIDE + 3),
        (3 * FILE_STRIDE, 3 * FILE_STRIDE + 4),
    ]
    assert offset_ranges({0: 4}, 4) == [(0, 4)]
    assert offset_ranges({2: 3}, 10) == [(2 * FILE_STRIDE, 2 * FILE_STRIDE + 3)]


def test_a_log_gets_the_streams_rules_batch_by_batch(spark, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.csv").write_text(
        "id,uid,ts,kind\n"
        "e1,u1,2024-03-10 09:00:00,page_view\n"
        "e2,u2,2024-03-10 10:00:00,session_start\n"
    )
    (logs / "b.csv").write_text(
        "id,uid,ts,kind\n"
        "e3,u3,2024-03-01 08:00:00,page_view\n"  # a day behind the watermark and more
        "e1,u1,2024-03-10 12:00:00,page_view\n"  # e1 again, on the same event date
        "e4,,2024-03-11 08:00:00,page_view\n"  # no user
        "e5,u2,2024-03-11 09:00:00,search\n"
    )
    store = FeatureStore(str(tmp_path / "wh"))
    rules = IngestRules(allowed_lateness_s=86400)
    results = backfill_log(
        spark, store, log_records(spark, [str(logs)], MAPPING), rules, batch_records=2
    )

    assert [r.batch_id for r in results] == [-3, -2, -1]
    assert sum(r.records for r in results) == 6
    reasons = Counter(r["reject_reason"] for r in store.read(spark, "quarantine").collect())
    assert reasons == {"too_late": 1, "duplicate_event_id": 1, "null_key": 1}
    bronze = store.read(spark, "events").orderBy("source_offset").collect()
    assert [(e["event_id"], e["ingest_batch_id"]) for e in bronze] == [
        ("e1", -3),
        ("e2", -3),
        ("e5", -1),
    ]
    assert [e["source_offset"] for e in bronze] == [0, 1, FILE_STRIDE + 3]
    assert {e["source_topic"] for e in bronze} == {f"log:{logs}"}
    features = store.read(spark, "user_features").orderBy("user_id").collect()
    assert [(f["user_id"], str(f["as_of"])) for f in features] == [
        ("u1", "2024-03-12"),
        ("u2", "2024-03-12"),
    ]
    assert store.read(spark, "feature_batches").count() == 3

    # Again into the same store: emptied first, the same rows again, nothing doubled.
    backfill_log(spark, store, log_records(spark, [str(logs)], MAPPING), rules, batch_records=2)
    assert store.read(spark, "events").count() == 3
    assert store.read(spark, "feature_batches").where(F.col("batch_id") < 0).count() == 3


def test_a_mapped_column_the_log_lacks_is_named_before_spark_runs(spark, tmp_path):
    (tmp_path / "a.csv").write_text("id,uid,ts\ne1,u1,2024-03-10 09:00:00\n")
    with pytest.raises(ValueError, match=r"a\.csv has no column kind"):
        log_records(spark, [str(tmp_path)], MAPPING)


def test_default_event_ids_name_the_file_as_the_replay_into_kafka_does(spark, tmp_path):
    (tmp_path / "logs" / "2024").mkdir(parents=True)
    (tmp_path / "logs" / "2024" / "a.csv").write_text(
        "uid,ts,kind\nu1,2024-03-10 09:00:00,page_view\nu2,2024-03-10 08:00:00,search\n"
    )
    mapping = ReplayMapping(user_id="uid", event_time="ts", event_type="kind")
    raw = log_records(spark, [str(tmp_path / "logs")], mapping)
    ids = [json.loads(r["value"])["event_id"] for r in raw.orderBy("offset").collect()]
    assert ids == [r.value["event_id"] for r in replay(tmp_path / "logs", mapping)]
    assert ids == ["2024/a.csv#1", "2024/a.csv#0"]  # sorted by event time, ids by file row
