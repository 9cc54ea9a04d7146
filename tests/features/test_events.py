from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from features.events import (
    EVENT_COLUMNS,
    EVENT_TYPES,
    PARSED_COLUMNS,
    PARSED_SCHEMA,
    REJECT_REASONS,
    duplicate_copies,
    parse_events,
    time_rules,
    utc_date,
)
from store.ingest import REJECT_COLUMNS
from tests.contract_cases import BAD_INPUTS, MAX_BYTES, event, p

TOPIC = "behaviour-events"
KAFKA_TS = datetime(2024, 3, 1, 13, 0, tzinfo=UTC)
RAW_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)


def _bytes(x: bytes | str | None) -> bytearray | None:
    if x is None:
        return None
    return bytearray(x.encode("utf-8") if isinstance(x, str) else x)


def raw_records(spark: SparkSession, records: list[tuple[bytes | str | None, ...]]) -> DataFrame:
    """Kafka-shaped rows: (key, value) pairs at offsets 0, 1, 2, ... of partition 0."""
    rows = [(_bytes(k), _bytes(v), TOPIC, 0, i, KAFKA_TS) for i, (k, v) in enumerate(records)]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def test_parse_events_rejects_each_bad_input_with_its_exact_reason(spark):
    raw = raw_records(spark, [(k, v) for k, v, _ in BAD_INPUTS])
    parsed = parse_events(raw, max_value_bytes=MAX_BYTES)
    expected = spark.createDataFrame(
        [(i, reason) for i, (_, _, reason) in enumerate(BAD_INPUTS)],
        "source_offset long, reject_reason string",
    )
    assertDataFrameEqual(parsed.select("source_offset", "reject_reason"), expected)


def test_parse_events_parses_valid_events_exactly(spark):
    purchase = event(
        props=p(session_id="s-9", product_id="p-1", query=None, plan=None, channel=None)
    )
    page_view = json.dumps(
        {
            "event_id": "e-2",
            "user_id": "u-2",
            "event_type": "page_view",
            "event_time": "2024-03-01T00:30:00+01:00",
            "schema_version": 1.0,
            "unknown_top_level_field": {"ignored": True},
        }
    )
    refund = event(
        event_id="e-3",
        event_type="refund",
        properties={"amount": 20, "device": "ios", "plan": "pro", "channel": "email", "x": 1},
    )
    records = [("u-1", purchase), ("u-2", page_view), ("u-1", refund)]
    t1 = datetime(2024, 3, 1, 12, 34, 56, 789000, tzinfo=UTC)
    t2 = datetime(2024, 2, 29, 23, 30, tzinfo=UTC)
    typed = [
        ("e-1", "u-1", "purchase", t1, 1, 19.99, "GBP", 2, "web", "s-9", "p-1", None, None),
        ("e-2", "u-2", "page_view", t2, 1, None, None, None, None, None, None, None, None),
        ("e-3", "u-1", "refund", t1, 1, 20.0, None, None, "ios", None, None, "pro", "email"),
    ]
    expected = spark.createDataFrame(
        [
            # Valid: no raw bytes (they would only travel back from the Python worker).
            (*row, TOPIC, 0, offset, KAFKA_TS, None, None, None)
            for offset, row in enumerate(typed)
        ],
        PARSED_SCHEMA,
    )
    parsed = parse_events(raw_records(spark, records), max_value_bytes=MAX_BYTES)
    assert tuple(parsed.columns) == PARSED_COLUMNS
    assertDataFrameEqual(parsed, expected)
    valid = parsed.where(parsed.reject_reason.isNull()).select(*EVENT_COLUMNS)
    assertDataFrameEqual(valid, expected.select(*EVENT_COLUMNS))


def test_rejected_rows_keep_their_bytes_reason_and_coordinates(spark):
    bad = event(event_type="login")
    raw = raw_records(spark, [("u-1", event()), ("u-1", bad), (None, b"\xff")])
    parsed = parse_events(raw, max_value_bytes=MAX_BYTES)
    valid = parsed.where(parsed.reject_reason.isNull())
    assertDataFrameEqual(valid.select("source_offset", "event_id"), [(0, "e-1")])
    expected_rejects = spark.createDataFrame(
        [
            (_bytes("u-1"), _bytes(bad), "unknown_event_type", TOPIC, 0, 1, KAFKA_TS),
            (None, _bytes(b"\xff"), "null_key", TOPIC, 0, 2, KAFKA_TS),
        ],
        "raw_key binary, raw_value binary, reject_reason string, source_topic string, "
        "source_partition int, source_offset long, kafka_timestamp timestamp",
    )
    rejects = parsed.where(parsed.reject_reason.isNotNull()).select(*REJECT_COLUMNS)
    assertDataFrameEqual(rejects, expected_rejects)
    # A valid event's bytes stay behind in the Python worker (its fields are its columns).
    assertDataFrameEqual(valid.select("raw_key", "raw_value"), [(None, None)])


def _at(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, 1, hour, minute, tzinfo=UTC)


def _timed(rows: list[tuple]) -> pd.DataFrame:
    """A driver-side verdict frame as the stream holds it (UTC timestamps from Arrow)."""
    frame = pd.DataFrame(
        rows, columns=["event_id", "event_time", "kafka_timestamp", "reject_reason"]
    )
    for column in ("event_time", "kafka_timestamp"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def test_time_rules_reject_future_and_late_events_only_if_still_valid():
    timed = _timed(
        [
            ("ok", _at(12), _at(12), None),
            ("at-max", _at(13), _at(12), None),
            ("future", _at(13, 1), _at(12), None),
            ("at-min", _at(10), _at(12), None),
            ("late", _at(9, 59), _at(12), None),
            ("already-bad", _at(23), _at(12), "not_json"),
            ("unparsed", None, _at(12), "not_json"),
        ]
    )
    reasons = time_rules(timed, max_event_time=_at(13), min_event_time=_at(10))
    assert list(reasons) == [
        None,
        None,
        "future_event_time",
        None,
        "too_late",
        "not_json",
        "not_json",
    ]
    assert timed["reject_reason"].isna().sum() == 5  # the frame itself is left alone

    naive_max = datetime(2024, 3, 1, 13, 0)  # read as UTC
    unbounded_below = time_rules(timed, max_event_time=naive_max, min_event_time=None)
    assert list(unbounded_below) == [
        None,
        None,
        "future_event_time",
        None,
        None,
        "not_json",
        "not_json",
    ]


def test_future_is_judged_against_each_records_own_kafka_timestamp():
    timed = _timed(
        [
            ("on-time", _at(12), _at(12), None),
            ("skew-ok", _at(13), _at(12), None),  # exactly one hour ahead of its producer
            ("future", _at(13, 1), _at(12), None),
            ("old-log", datetime(2010, 12, 1, 8, 26, tzinfo=UTC), _at(12), None),  # a replay
            # Sent in 2010 and dated 2024: from the future, and behind the bound below.
            ("future-and-late", _at(12), datetime(2010, 12, 1, tzinfo=UTC), None),
        ]
    )
    reasons = time_rules(timed, max_skew_after_record_s=3600, min_event_time=_at(13, 1))
    # The first failing rule wins: a future event is not also too late.
    assert list(reasons) == [
        "too_late",
        "too_late",
        "future_event_time",
        "too_late",
        "future_event_time",
    ]
    assert list(time_rules(timed, max_skew_after_record_s=3600)) == [
        None,
        None,
        "future_event_time",
        None,
        "future_event_time",
    ]


def test_an_event_before_the_earliest_time_is_no_event():
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    timed = _timed(
        [
            ("epoch", epoch, _at(12), None),
            ("just-before", datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), _at(12), None),
            ("at-bound", datetime(2000, 1, 1, tzinfo=UTC), _at(12), None),
            ("ok", _at(12), _at(12), None),
            ("already-bad", epoch, _at(12), "not_json"),
        ]
    )
    earliest = datetime(2000, 1, 1, tzinfo=UTC)
    # The first failing rule wins: an epoch event is not also too late.
    reasons = time_rules(timed, earliest_event_time=earliest, min_event_time=_at(10))
    assert list(reasons) == [
        "before_earliest_event_time",
        "before_earliest_event_time",
        "too_late",
        None,
        "not_json",
    ]
    assert list(time_rules(timed, earliest_event_time=None)) == [None] * 4 + ["not_json"]


def test_duplicate_copies_keeps_the_lowest_partition_and_offset():
    columns = ["event_id", "source_topic", "source_partition", "source_offset", "reject_reason"]
    rows = [
        ("e-1", TOPIC, 1, 5, None),
        ("e-1", TOPIC, 0, 9, None),
        ("e-1", TOPIC, 0, 7, None),
        ("e-2", TOPIC, 1, 1, None),
        ("e-3", TOPIC, 0, 1, "too_late"),  # a rejected copy does not count as the first
        ("e-3", TOPIC, 0, 3, None),
    ]
    batch = pd.DataFrame(rows, columns=columns)
    assert duplicate_copies(batch).tolist() == [True, True, False, False, False, False]


def test_utc_date_ignores_the_session_time_zone(spark):
    moments = [
        (datetime(2024, 3, 2, 3, 0, tzinfo=UTC),),
        (datetime(2024, 3, 1, 23, 59, 59, 999999, tzinfo=UTC),),
        (datetime(1969, 12, 31, 23, 0, tzinfo=UTC),),
    ]
    before = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    try:
        df = spark.createDataFrame(moments, "t timestamp")
        assertDataFrameEqual(
            df.select(utc_date(df.t).alias("d")),
            [(date(2024, 3, 2),), (date(2024, 3, 1),), (date(1969, 12, 31),)],
        )
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)


def test_events_doc_lists_every_reason_in_order_and_every_event_type():
    text = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    documented = re.findall(r"^\| \d+ \| `([^`]+)` \|", text, flags=re.MULTILINE)
    assert documented == list(REJECT_REASONS)
    for event_type in EVENT_TYPES:
        assert f"`{event_type}`" in text
