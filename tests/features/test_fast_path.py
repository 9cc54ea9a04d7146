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
from tests.contract_cases import BAD_INPUTS, MAX_BYTES, NEAR_MISSES, random_edits, raw, simulated

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
    """Parse ``records`` in Spark; assert every verdict is check_record's; return what the
    fast path typed for each record (None where it was in doubt)."""
    frame = _raw(spark, records)
    parsed = _by_offset(
        parse_events(frame, max_value_bytes=MAX_BYTES).select(
            "source_offset", *TYPED_FIELDS, "reject_reason"
        ),
        "source_offset",
    )
    staged = stage_events(frame, max_value_bytes=MAX_BYTES)
    fast = _by_offset(staged.select("source_offset", "in_doubt", *TYPED_FIELDS), "source_offset")
    typed: list[dict[str, Any] | None] = []
    for i, (key, value) in enumerate(records):
        fields, reason = check_record(key, value, MAX_BYTES)
        got = parsed[i]
        assert (got.pop("reject_reason"), got) == (reason, fields), (key, value)
        sure = None if fast[i].pop("in_doubt") else fast[i]
        if sure is not None:
            assert reason is None and sure == fields, (key, value)
        typed.append(sure)
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
