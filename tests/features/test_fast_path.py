"""The validator's JVM fast path (jvm/validator) never changes a verdict.

It types the events it is sure the contract's one validator (features.validate.check_record)
accepts and leaves every other record in doubt for that validator. So on every input the
parse must give check_record's reason and typed fields, and the fast path must type only
what check_record accepts with exactly those fields. The inputs: the contract's table of
cases, near misses of a valid event, seeded random byte edits, simulated events.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import DataFrame, SparkSession

from features.events import _fast_path, parse_events, stage_events
from features.validate import TYPED_FIELDS, check_record
from tests.contract_cases import (
    BAD_INPUTS,
    MAX_BYTES,
    NEAR_MISSES,
    event,
    random_edits,
    raw,
    simulated,
)

Records = list[tuple[bytes | None, bytes | None]]
RAW_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)


def _raw(spark: SparkSession, records: Records) -> DataFrame:
    table = pa.table(
        {
            "key": pa.array([k for k, _ in records], pa.binary()),
            "value": pa.array([v for _, v in records], pa.binary()),
            "topic": pa.array(["t"] * len(records)),
            "partition": pa.array([0] * len(records), pa.int32()),
            "offset": pa.array(range(len(records)), pa.int64()),
            "timestamp": pa.array([0] * len(records), pa.timestamp("us", tz="UTC")),
        }
    )
    return spark.createDataFrame(table, RAW_SCHEMA)


def _by_offset(frame: DataFrame, offset: str) -> dict[int, dict[str, Any]]:
    """Rows by offset, timestamps as UTC-aware datetimes whatever the time zone."""
    return {row.pop(offset): row for row in frame.toArrow().to_pylist()}


def _check(spark: SparkSession, records: Records) -> list[dict[str, Any] | None]:
    """Parse ``records`` in Spark; assert every verdict is check_record's, and so is every
    verdict reached without the Python validator; return the events the JVM typed (None
    for a record it doubted or rejected)."""
    frame = _raw(spark, records)
    parsed = _by_offset(
        parse_events(frame, max_value_bytes=MAX_BYTES).select(
            "source_offset", *TYPED_FIELDS, "reject_reason"
        ),
        "source_offset",
    )
    staged = stage_events(frame, max_value_bytes=MAX_BYTES).select(
        "source_offset", "in_doubt", "reject_reason", *TYPED_FIELDS
    )
    fast = _by_offset(staged, "source_offset")
    typed: list[dict[str, Any] | None] = []
    for i, (key, value) in enumerate(records):
        fields, reason = check_record(key, value, MAX_BYTES)
        got = parsed[i]
        assert (got.pop("reject_reason"), got) == (reason, fields), (key, value)
        row = fast[i]
        doubt, staged_reason = row.pop("in_doubt"), row.pop("reject_reason")
        if not doubt:  # decided in the JVM, without the Python validator
            assert (staged_reason, row) == (reason, fields), (key, value)
        typed.append(None if doubt or reason is not None else row)
    return typed


@pytest.fixture(scope="module")
def fast_spark(spark: SparkSession) -> SparkSession:
    """The session, failing (not skipping) when the fast path is missing: then these tests
    would only test the Python validator against itself."""
    if _fast_path(spark, MAX_BYTES) is None:
        pytest.fail("the validator's fast path is not on the classpath: run `make setup`")
    return spark


def test_the_contract_cases_get_check_records_verdicts(fast_spark: SparkSession) -> None:
    typed = _check(fast_spark, [(raw(k), raw(v)) for k, v, _ in BAD_INPUTS])
    valid = [i for i, (_, _, reason) in enumerate(BAD_INPUTS) if reason is None]
    assert valid and all(typed[i] is not None for i in valid)


def test_near_misses_and_random_edits_get_check_records_verdicts(
    fast_spark: SparkSession,
) -> None:
    records = [(raw(k), raw(v)) for k, v in NEAR_MISSES] + random_edits()
    typed = _check(fast_spark, records)
    # Both kinds of outcome happen: the shortcut is exercised and it does doubt.
    assert 0 < sum(t is not None for t in typed) < len(typed)


def test_simulated_events_all_take_the_fast_path(fast_spark: SparkSession) -> None:
    """The shortcut must serve the common case, else it is only a second code path."""
    typed = _check(fast_spark, simulated(3000))
    assert all(t is not None for t in typed)


def test_null_keys_and_oversized_values_are_rejected_without_the_python_validator(
    fast_spark: SparkSession,
) -> None:
    """check_record's first two rules read no byte of the value: Spark applies them itself
    (decision 48), so a topic of keyless records costs no Python."""
    records = [
        (None, raw(event())),
        (None, b"\xff" * (MAX_BYTES + 1)),
        (None, None),
        (b"u-1", raw(event(padding="x" * MAX_BYTES))),
        (b"u-1", b"{" * (MAX_BYTES + 1)),
    ]
    _check(fast_spark, records)
    staged = stage_events(_raw(fast_spark, records), max_value_bytes=MAX_BYTES)
    rows = staged.orderBy("source_offset").collect()
    decided = [(r.in_doubt, r.reject_reason, r.raw_value is not None) for r in rows]
    assert (
        decided
        == [(False, "null_key", True)] * 2
        + [(False, "null_key", False)]
        + [(False, "oversized_value", True)] * 2
    )
