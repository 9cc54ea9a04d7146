"""process_batch on hand-built Kafka-shaped batches, into a scratch Delta warehouse."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from pyspark.testing import assertDataFrameEqual

from features.expectations import Expectations, InSet
from infra.spark import CHECKPOINT_INTERVAL
from store.ingest import DataQualityError, IngestRules, process_batch
from store.state import StreamState
from store.tables import FeatureStore

RAW = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
SENT = datetime(2024, 6, 1, tzinfo=UTC)  # the producer's clock: everything below is in its past


def record(user: str, event_id: str, when: str, partition: int, offset: int) -> tuple:
    value = {
        "event_id": event_id,
        "user_id": user,
        "event_type": "page_view",
        "event_time": when,
        "schema_version": 1,
    }
    return (
        bytearray(user.encode()),
        bytearray(json.dumps(value).encode()),
        "t",
        partition,
        offset,
        SENT,
    )


def test_lateness_is_judged_against_the_slowest_partition(spark, tmp_path):
    store = FeatureStore(str(tmp_path))
    rules = IngestRules(allowed_lateness_s=86400)
    batch0 = spark.createDataFrame(
        [
            record("u1", "a", "2024-03-10T12:00:00Z", 0, 0),  # partition 0 is far ahead in time
            record("u2", "b", "2024-03-02T12:00:00Z", 1, 0),
        ],
        RAW,
    )
    r0 = process_batch(spark, store, batch0, 0, rules, "app")
    assert (r0.clock, r0.watermark) == (datetime(2024, 3, 10, 12), datetime(2024, 3, 2, 12))

    sent = [
        # Eight days behind the clock but within a day of partition 1's progress: accepted.
        record("u2", "c", "2024-03-02T06:00:00Z", 1, 1),
        # More than a day behind the watermark: too late.
        record("u2", "d", "2024-03-01T06:00:00Z", 1, 2),
        record("u1", "a", "2024-03-10T12:00:00Z", 0, 1),  # resent: a duplicate
    ]
    batch1 = spark.createDataFrame(sent, RAW)
    r1 = process_batch(spark, store, batch1, 1, rules, "app")
    assert (r1.valid, r1.reasons) == (1, {"too_late": 1, "duplicate_event_id": 1})
    assert r1.partition_clocks == {
        "t/0": datetime(2024, 3, 10, 12),
        "t/1": datetime(2024, 3, 2, 12),
    }
    # Every quarantined record keeps its original bytes, the driver's verdicts too.
    assertDataFrameEqual(
        store.read(spark, "quarantine").select(
            "source_partition", "source_offset", "reject_reason", "raw_value"
        ),
        [(1, 2, "too_late", sent[1][1]), (0, 1, "duplicate_event_id", sent[2][1])],
    )
    assert sorted(r["event_id"] for r in store.read(spark, "events").collect()) == ["a", "b", "c"]
    # A batch already recorded is skipped whole.
    assert process_batch(spark, store, batch1, 1, rules, "app").skipped


def test_every_table_a_batch_creates_checkpoints_every_100_commits(spark, tmp_path):
    # Delta's default (10) put a 1.5-2 s checkpoint into every 10th batch (decision 29).
    store = FeatureStore(str(tmp_path))
    batch = spark.createDataFrame(
        [record("u1", "a", "2024-03-10T12:00:00Z", 0, 0), (None, b"{", "t", 0, 1, SENT)], RAW
    )
    process_batch(spark, store, batch, 0, IngestRules(), "app")
    for table in (
        "events",
        "quarantine",
        "user_activity_daily",
        "user_features",
        "feature_batches",
    ):
        props = spark.sql(f"DESCRIBE DETAIL delta.`{store.path(table)}`").first()["properties"]
        assert props.get("delta.checkpointInterval") == str(CHECKPOINT_INTERVAL) == "100", table


def test_the_id_index_catches_up_with_the_tables_and_is_refilled_when_ahead(spark, tmp_path):
    rules = IngestRules(allowed_lateness_s=3 * 86400)
    ids_dir, day = tmp_path / "ids", date(2024, 3, 10)
    a = record("u1", "a", "2024-03-10T12:00:00Z", 0, 0)
    b = record("u2", "b", "2024-03-10T13:00:00Z", 0, 1)
    b_again = record("u2", "b", "2024-03-10T13:00:00Z", 0, 2)

    def load(store, ids_dir=None):
        return StreamState.load(spark, store, "app", rules.allowed_lateness_s, ids_dir=ids_dir)

    def ingest(store, state, batch_id, *records):
        batch = spark.createDataFrame(list(records), RAW)
        return process_batch(spark, store, batch, batch_id, rules, "app", state=state)

    store = FeatureStore(str(tmp_path / "wh"))
    state = load(store, ids_dir)
    ingest(store, state, 0, a)
    assert (state.ids.upto, state.ids.contains(day, ["a", "b"])) == (0, [True, False])
    state.ids.close()

    # Batch 1 commits to the tables while the index stays at batch 0: a crash between the
    # appends and the index write. The next start reads batch 1's ids from bronze.
    ingest(store, load(store), 1, b)
    state = load(store, ids_dir)
    assert (state.ids.upto, state.ids.contains(day, ["a", "b"])) == (1, [True, True])
    assert ingest(store, state, 2, b_again).reasons == {"duplicate_event_id": 1}
    state.ids.close()

    # Tables rebuilt under the kept index: it is ahead of them, so it is emptied first.
    fresh = FeatureStore(str(tmp_path / "wh2"))
    state = load(fresh, ids_dir)
    assert (state.ids.upto, state.ids.days()) == (-1, [])
    r0 = ingest(fresh, state, 0, b_again)
    assert (r0.valid, r0.reasons) == (1, {})
    state.ids.close()


def test_expectations_are_counted_in_the_batch_row_and_an_error_stops_before_the_features(
    spark, tmp_path
):
    store = FeatureStore(str(tmp_path))
    ok = process_batch(
        spark,
        store,
        spark.createDataFrame([record("u1", "a", "2024-03-10T12:00:00Z", 0, 0)], RAW),
        0,
        IngestRules(),
        "app",
    )
    assert ok.dq == {} and "dq violations" not in ok.line()
    # Page views are not among the counted types of this declaration: a warning, counted.
    counted = frozenset({"purchase"})
    warn = IngestRules(expectations=Expectations(events=(InSet("event_type", counted),)))
    batch = spark.createDataFrame([record("u2", "b", "2024-03-10T13:00:00Z", 0, 1)], RAW)
    r = process_batch(spark, store, batch, 1, warn, "app")
    assert r.dq == {"in_set:event_type": 1} and "dq violations: in_set:event_type=1" in r.line()
    rows = {
        b["batch_id"]: b["dq_violations"] for b in store.read(spark, "feature_batches").collect()
    }
    assert rows == {0: {}, 1: {"in_set:event_type": 1}}

    # The same check as an error: the batch stops before its features are written, and is
    # redone whole at the next start (here with the check counted only).
    strict = Expectations(events=(InSet("event_type", counted, severity="error"),))
    batch = spark.createDataFrame([record("u3", "c", "2024-03-10T14:00:00Z", 0, 2)], RAW)
    with pytest.raises(DataQualityError, match=r"batch 2: .*in_set:event_type=1"):
        process_batch(spark, store, batch, 2, IngestRules(expectations=strict), "app")
    features = store.read(spark, "user_features")
    assert features.where("batch_id = 2").count() == 0
    assert store.read(spark, "feature_batches").where("batch_id = 2").count() == 0
    again = IngestRules(expectations=strict, dq_stop_on="never")
    redone = process_batch(spark, store, batch, 2, again, "app")
    assert redone.dq == {"in_set:event_type": 1}
    assert store.read(spark, "user_features").where("batch_id = 2").count() == 1
    assert store.read(spark, "events").count() == 3  # each event once
