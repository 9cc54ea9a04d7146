"""The feature stream on the real stack: Kafka -> jobs/stream_features -> Delta (+ DLQ topic).

One module-scoped scenario sends a catalogue of bad inputs and valid events in two rounds,
runs the stream after each round, and the tests read what it left behind.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from features.aggregates import DAILY_COLUMNS
from infra.kafka_io import client_config, spark_options
from jobs.stream_features import app_id
from store.ingest import IngestRules, last_batch, process_batch, rebuild
from store.tables import TABLES, FeatureStore
from tests.integration import streaming
from tests.integration.streaming import run_stream, send, stream_config

pytestmark = pytest.mark.integration

MAX_BYTES = streaming.MAX_BYTES


def ev(
    event_id: str,
    user: str = "u1",
    when: str = "2024-03-01T10:00:00.000Z",
    event_type: str = "page_view",
    **fields,
) -> dict:
    doc = {
        "event_id": event_id,
        "user_id": user,
        "event_type": event_type,
        "event_time": when,
        "schema_version": 1,
        "properties": {"device": "web"},
    }
    doc.update(fields)
    return doc


def rec(doc: dict, key: str | None = "u1") -> tuple[bytes | None, bytes]:
    return (None if key is None else key.encode()), json.dumps(doc).encode()


def _nested(depth: int) -> bytes:
    """A valid event but for one field nested ``depth`` arrays deep."""
    return json.dumps(ev("deep", extra="X")).replace('"X"', "[" * depth + "]" * depth).encode()


# Round 1: (record, expected reason or None for valid), at offsets 0, 1, 2, ...
ROUND_1 = [
    (rec(ev("v1")), None),
    (
        rec(
            ev(
                "v2",
                when="2024-03-02T09:00:00.000Z",
                event_type="purchase",
                properties={"amount": 12.5, "currency": "GBP", "quantity": 1},
            )
        ),
        None,
    ),
    (rec(ev("v3", user="u2"), key="u2"), None),
    ((b"u1", b"hello, not json"), "not_json"),
    ((b"u1", b"\xff\xfe\x00garbage"), "not_utf8"),
    (rec(ev(123)), "wrong_type:event_id"),  # type: ignore[arg-type]
    (rec({k: v for k, v in ev("m1").items() if k != "event_type"}), "missing_field:event_type"),
    (rec(ev("t1", event_type="teleport")), "unknown_event_type"),
    (rec(ev("s1", schema_version=2)), "unknown_schema_version"),
    (rec(ev("big", padding="x" * MAX_BYTES)), "oversized_value"),
    (rec(ev("nk"), key=None), "null_key"),
    (rec(ev("km"), key="someone-else"), "key_mismatch"),
    (rec(ev("f1", when="2099-01-01T00:00:00.000Z")), "future_event_time"),
    (rec(ev("v1")), "duplicate_event_id"),  # same event_id again in the same batch
    # A strict contract (issue 12): what a lenient parser would have let through.
    ((b"u1", rec(ev("tail"))[1] + b" x"), "not_json"),  # bytes after the value
    ((b"u1", rec(ev("two"))[1] + rec(ev("three"))[1]), "not_json"),  # two values
    ((b"u1", b'{"event_id": "d", "event_id": "e"}'), "not_json"),  # a duplicate key
    ((b"u1", _nested(1900)), "not_json"),  # deeper than the parser goes
    (rec(ev("ctl", user="u\x07"), key="u\x07"), "invalid_value:user_id"),
    (rec(ev("b\u202eidi")), "invalid_value:event_id"),
    (rec(ev("long", user="u" * 300), key="u" * 300), "invalid_value:user_id"),
    (rec(ev("epoch", when="1970-01-01T00:00:00.000Z")), "before_earliest_event_time"),
    (rec(ev("ek"), key=""), "key_mismatch"),
]
# Round 2, after the clock reached 2024-03-02 09:00 (allowed lateness: 3 days).
ROUND_2 = [
    (
        rec(
            ev(
                "v2",
                when="2024-03-02T09:00:00.000Z",
                event_type="purchase",
                properties={"amount": 12.5, "currency": "GBP", "quantity": 1},
            )
        ),
        "duplicate_event_id",
    ),
    (rec(ev("late", when="2024-02-20T10:00:00.000Z")), "too_late"),
    (rec(ev("v4", when="2024-03-05T08:00:00.000Z")), None),
    (rec(ev("v5", user="u2", when="2024-03-01T23:00:00.000Z"), key="u2"), None),  # late but allowed
]


@pytest.fixture(scope="module")
def scenario(kafka_stack, base_config, spark, tmp_path_factory):
    cfg = stream_config(base_config, tmp_path_factory.mktemp("stream"), "catalogue")
    lines: list[str] = []
    send(cfg, [r for r, _ in ROUND_1])
    run_stream(spark, cfg, lines)
    send(cfg, [r for r, _ in ROUND_2])
    run_stream(spark, cfg, lines)
    return cfg, FeatureStore(cfg.storage.warehouse), lines


def expected_rejects() -> list[tuple[int, str]]:
    rows = [(i, why) for i, (_, why) in enumerate(ROUND_1) if why]
    rows += [(len(ROUND_1) + i, why) for i, (_, why) in enumerate(ROUND_2) if why]
    return rows


def test_every_bad_input_is_quarantined_with_its_reason(scenario, spark):
    _, store, _ = scenario
    got = store.read(spark, "quarantine").select("source_offset", "reject_reason")
    assertDataFrameEqual(
        got, spark.createDataFrame(expected_rejects(), "source_offset long, reject_reason string")
    )
    # The quarantine keeps the original bytes.
    not_utf8 = store.read(spark, "quarantine").where(F.col("reject_reason") == "not_utf8").first()
    assert bytes(not_utf8["raw_value"]) == b"\xff\xfe\x00garbage"


def test_valid_plus_quarantined_equals_produced(scenario, spark):
    _, store, lines = scenario
    produced = len(ROUND_1) + len(ROUND_2)
    batches = (
        store.read(spark, "feature_batches")
        .agg(
            F.sum("records").alias("records"),
            F.sum("valid").alias("valid"),
            F.sum("quarantined").alias("quarantined"),
        )
        .first()
    )
    assert (batches["records"], batches["valid"] + batches["quarantined"]) == (produced, produced)
    assert store.read(spark, "events").count() + store.read(spark, "quarantine").count() == produced
    assert sorted(r["event_id"] for r in store.read(spark, "events").collect()) == [
        "v1",
        "v2",
        "v3",
        "v4",
        "v5",
    ]
    assert any("quarantined" in line for line in lines)


def test_dead_letter_topic_holds_raw_records_with_reason_headers(scenario):
    cfg, _, _ = scenario
    consumer = Consumer(
        {
            **client_config(cfg.kafka, "admin"),
            "group.id": f"t-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([cfg.kafka.topics.dlq])
    got = []
    deadline = datetime.now(UTC).timestamp() + 60
    while len(got) < len(expected_rejects()) and datetime.now(UTC).timestamp() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            headers = {k: v.decode() for k, v in (msg.headers() or [])}
            got.append((int(headers["dlq.offset"]), headers["dlq.reason"], headers["dlq.topic"]))
    consumer.close()
    topic = cfg.kafka.topics.events
    assert sorted(got) == sorted((o, why, topic) for o, why in expected_rejects())


def test_daily_and_features_reflect_only_valid_events(scenario, spark):
    _, store, _ = scenario
    daily = store.read(spark, "user_activity_daily").select(
        "user_id", "activity_date", "n_events", "n_purchase", "amount_purchase"
    )
    assertDataFrameEqual(
        daily,
        spark.createDataFrame(
            [
                ("u1", datetime(2024, 3, 1).date(), 1, 0, 0.0),
                ("u1", datetime(2024, 3, 2).date(), 1, 1, 12.5),
                ("u1", datetime(2024, 3, 5).date(), 1, 0, 0.0),
                ("u2", datetime(2024, 3, 1).date(), 2, 0, 0.0),
            ],
            "user_id string, activity_date date, n_events long, n_purchase long, amount_purchase double",
        ),
    )
    features = store.read(spark, "user_features").select(
        "user_id", "as_of", "days_since_last_event", "n_active_days_lifetime"
    )
    # Both users are re-featured as of the clock's next midnight, even u2 who sent nothing late.
    assertDataFrameEqual(
        features,
        spark.createDataFrame(
            [
                ("u1", datetime(2024, 3, 6).date(), 1, 3),
                ("u2", datetime(2024, 3, 6).date(), 5, 1),
            ],
            "user_id string, as_of date, days_since_last_event int, n_active_days_lifetime long",
        ),
    )


def round_2_records(spark, cfg):
    """Batch 1 is round 2: the records after round 1's offsets."""
    return (
        spark.read.format("kafka")
        .options(**spark_options(cfg.kafka, "features"))
        .option("subscribe", cfg.kafka.topics.events)
        .option("startingOffsets", "earliest")
        .load()
        .where(F.col("offset") >= len(ROUND_1))
    )


def test_replaying_a_committed_batch_changes_no_table(scenario, spark):
    """Crash after every write of batch 1 but before its bookkeeping row: replay changes nothing."""
    cfg, store, _ = scenario
    before = {t: store.read(spark, t).collect() for t in TABLES if t != "feature_batches"}
    versions = {
        t: DeltaTable.forPath(spark, store.path(t)).history(1).first()["version"] for t in before
    }
    checkpoint = str(cfg.resolve(cfg.storage.checkpoints) / cfg.stream_features.checkpoint_name)
    app = app_id(checkpoint)
    raw = round_2_records(spark, cfg)
    rules = IngestRules(max_value_bytes=MAX_BYTES)
    assert process_batch(spark, store, raw, 1, rules, app).skipped  # complete batches are skipped

    DeltaTable.forPath(spark, store.path("feature_batches")).delete(F.col("batch_id") == 1)
    replay = process_batch(spark, store, raw, 1, rules, app)
    assert not replay.skipped and replay.records == len(ROUND_2)
    for table, rows in before.items():
        assertDataFrameEqual(store.read(spark, table).collect(), rows)
        assert (
            DeltaTable.forPath(spark, store.path(table)).history(1).first()["version"]
            == versions[table]
        ), table


def test_a_batch_whose_bookkeeping_row_beat_one_of_its_appends_is_redone(scenario, spark):
    """The feature_batches row is appended beside the others: crash after it but before
    batch 1's feature vectors committed. A restart treats batch 1 as unfinished and writes
    only what is missing (docs/decisions.md 34)."""
    cfg, store, _ = scenario
    before = {t: store.read(spark, t).collect() for t in TABLES}
    checkpoint = str(cfg.resolve(cfg.storage.checkpoints) / cfg.stream_features.checkpoint_name)
    app = app_id(checkpoint)
    raw = round_2_records(spark, cfg)
    rules = IngestRules(max_value_bytes=MAX_BYTES)
    features = DeltaTable.forPath(spark, store.path("user_features"))
    features.delete(F.col("batch_id") == 1)
    assert last_batch(spark, store, app)["batch_id"] == 0

    replay = process_batch(spark, store, raw, 1, rules, app)
    assert not replay.skipped and replay.users_updated > 0
    for table, rows in before.items():
        assertDataFrameEqual(store.read(spark, table).collect(), rows)
    assert last_batch(spark, store, app)["batch_id"] == 1
    history = features.history(2).select("operation").collect()
    assert [h["operation"] for h in history] == ["WRITE", "DELETE"]


def test_stream_and_backfill_build_identical_tables(kafka_stack, base_config, spark, tmp_path):
    """Parity: simulated events streamed in three rounds vs the same events rebuilt at once."""
    from sources.simulator import SimulationConfig, simulate

    cfg = stream_config(base_config, tmp_path, "parity")
    events = list(simulate(SimulationConfig(n_users=150, days=21, seed=3)))
    thirds = [
        events[: len(events) // 3],
        events[len(events) // 3 : 2 * len(events) // 3],
        events[2 * len(events) // 3 :],
    ]
    for part in thirds:
        send(cfg, [(e["user_id"].encode(), json.dumps(e).encode()) for e in part])
        run_stream(spark, cfg)
    streamed = FeatureStore(cfg.storage.warehouse)
    assert streamed.read(spark, "feature_batches").count() == 3

    rebuilt = FeatureStore(str(tmp_path / "rebuilt"))
    rebuild(spark, rebuilt, streamed.read(spark, "events").drop("event_date", "ingest_batch_id"))
    assert streamed.read(spark, "events").count() == len(events)
    for table, cols in (
        ("user_activity_daily", list(DAILY_COLUMNS)),
        ("user_lifetime", None),
        ("user_features", None),
    ):
        a, b = streamed.read(spark, table), rebuilt.read(spark, table)
        if cols:
            a, b = a.select(*cols), b.select(*cols)
        assert a.count() > 0
        assertDataFrameEqual(a, b)
