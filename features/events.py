"""Event contract v1: parse Kafka records into typed events and say why a record is rejected.

Every function here is a pure DataFrame -> DataFrame transform. Parsing never drops a row
and never fails the query: a bad record gets a `reject_reason` instead. The contract and the
reason codes (with their order) are documented in docs/events.md.

The parse takes two steps (docs/decisions.md, decisions 27, 44 and 48). :func:`stage_events`
rejects the records with a null key or an oversized value (check_record's first two rules,
which read no byte of the value) and runs the validator's JVM fast path (jvm/validator),
which types the plainly valid events; every other record is in doubt.
:func:`check_doubtful` runs the contract's one validator (features.validate, in Spark's
Python workers) on the doubtful records only. :func:`parse_events` is both at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from py4j.java_gateway import JavaClass
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.classic.column import Column as JvmColumn

from features.contract import (
    AMOUNT_REQUIRED_FOR,
    DEVICES,
    FORBIDDEN_ID_CHARS,
    MAX_ID_CHARS,
    PROPERTY_FIELDS,
    REQUIRED_FIELDS,
    SUPPORTED_SCHEMA_VERSIONS,
)
from features.contract import EVENT_TYPES as EVENT_TYPES
from features.validate import PARSE_REASONS, TYPED_FIELDS, check_records

# Every reject reason, in the order the rules are checked: the first failing rule wins.
# parse_events sets the first block; time_rules and the duplicate rule
# (duplicate_copies, then the ids already stored), which run after it, set the last four.
REJECT_REASONS: tuple[str, ...] = (
    *PARSE_REASONS,
    "before_earliest_event_time",
    "future_event_time",
    "too_late",
    "duplicate_event_id",
)

EVENT_COLUMNS: tuple[str, ...] = (
    *TYPED_FIELDS,
    "source_topic",
    "source_partition",
    "source_offset",
    "kafka_timestamp",
)
PARSED_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, "raw_key", "raw_value", "reject_reason")

# The parsed rows as Spark types: typed fields, Kafka coordinates, raw bytes, reason.
TYPED_SCHEMA = (
    "event_id string, user_id string, event_type string, event_time timestamp, "
    "schema_version int, amount double, currency string, quantity int, device string, "
    "session_id string, product_id string, plan string, channel string"
)
PARSED_SCHEMA = (
    f"{TYPED_SCHEMA}, source_topic string, source_partition int, source_offset long, "
    "kafka_timestamp timestamp, raw_key binary, raw_value binary, reject_reason string"
)
_ARROW_TYPES = {
    "event_time": pa.timestamp("us", tz="UTC"),
    "schema_version": pa.int32(),
    "amount": pa.float64(),
    "quantity": pa.int32(),
}
_COORDINATE_COLUMNS = ("topic", "partition", "offset", "timestamp")
# The same coordinates as the parsed rows name them.
_SOURCE_COLUMNS = ("source_topic", "source_partition", "source_offset", "kafka_timestamp")
_KAFKA_COLUMNS = (*_COORDINATE_COLUMNS, "key", "value")


def utc_date(ts: Column) -> Column:
    """Calendar date of a timestamp in UTC, whatever the session time zone (F.to_date is not)."""
    return F.date_from_unix_date(F.floor(F.unix_micros(ts) / F.lit(86_400_000_000)).cast("int"))


def _parser(max_value_bytes: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The mapInArrow function: features.validate.check_records on every batch."""

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            keys, values = batch.column("key").to_pylist(), batch.column("value").to_pylist()
            rows, reasons = check_records(keys, values, max_value_bytes)
            columns = list(zip(*rows, strict=True)) if rows else [()] * len(TYPED_FIELDS)
            typed = [
                pa.array(columns[i], type=_ARROW_TYPES.get(name, pa.string()))
                for i, name in enumerate(TYPED_FIELDS)
            ]
            coordinates = [batch.column(name) for name in _COORDINATE_COLUMNS]
            coordinates[3] = coordinates[3].cast(pa.timestamp("us", tz="UTC"))
            yield pa.RecordBatch.from_arrays(
                [
                    *typed,
                    *coordinates,
                    *_bytes_of_rejects(batch, reasons),
                    pa.array(reasons, type=pa.string()),
                ],
                names=list(PARSED_COLUMNS),
            )

    return parse


def _bytes_of_rejects(batch: pa.RecordBatch, reasons: list[str | None]) -> list[pa.Array]:
    """The record's key and value where it is rejected, null where it is valid: a valid
    event's bytes are in its typed columns, and carrying them back from the Python worker
    into the batch's cache cost a fifth of the parse (docs/decisions.md, decision 40)."""
    if all(reason is None for reason in reasons):
        return [pa.nulls(len(reasons), pa.binary()), pa.nulls(len(reasons), pa.binary())]
    rejected = pa.array([reason is not None for reason in reasons])
    none = pa.scalar(None, pa.binary())
    return [pc.if_else(rejected, batch.column(name), none) for name in ("key", "value")]


def parse_events(raw: DataFrame, *, max_value_bytes: int) -> DataFrame:
    """Parse Kafka records (key, value, topic, partition, offset, timestamp) into typed events.

    One output row per input row, PARSED_COLUMNS. `reject_reason` is null for a valid event
    and otherwise the first failing rule in REJECT_REASONS. Every verdict is
    features.validate.check_record's, the contract's one validator: the JVM fast path only
    types the events it is sure that validator accepts (:func:`stage_events`), and the
    validator itself checks the rest in Spark's Python workers (:func:`check_doubtful`);
    typed columns are filled wherever the field has the right JSON type, also on rejected
    rows. `raw_key` and `raw_value` hold the record's bytes on rejected rows only: a rule
    applied later (time, duplicates) takes them from ``raw`` by the Kafka coordinates.

    ``raw`` is read once for each step here; a caller that reads Kafka caches the staged
    records instead, and checks them only when some are in doubt (store.ingest).
    """
    staged = stage_events(raw, max_value_bytes=max_value_bytes)
    sure = staged.where(~F.col("in_doubt"))
    checked = check_doubtful(staged, max_value_bytes=max_value_bytes)
    return sure.unionByName(checked).select(*[F.col(c) for c in PARSED_COLUMNS])


# The staged records: the parsed columns, the event's UTC date, whether it is in doubt.
STAGED_COLUMNS: tuple[str, ...] = (*PARSED_COLUMNS, "event_date", "in_doubt")
_FAST = "_fast"
_REJECTED = "_rejected"
_FAST_PATHS: dict[tuple[str, int], Any] = {}
_log = logging.getLogger("churn.validator")


def _fast_path(spark: SparkSession, max_value_bytes: int) -> Any | None:
    """The JVM fast path (jvm/validator) configured with the contract, one per application;
    None when its jar is not on the classpath."""
    key = (spark.sparkContext.applicationId, max_value_bytes)
    if key not in _FAST_PATHS:
        cls = spark._jvm.churn.validator.FastPath  # type: ignore[union-attr]
        if not isinstance(cls, JavaClass):
            _log.warning(
                "the event validator's JVM fast path is not on the classpath (run `make "
                'setup`; under spark-submit pass `--jars "$(python -m infra.jars '
                '--print-spark-jars)"`): the Python validator checks every record, same '
                "verdicts, about 3 times the parse time"
            )
            _FAST_PATHS[key] = None
        else:
            assert [n for n, _ in REQUIRED_FIELDS] == list(TYPED_FIELDS[:5])
            _FAST_PATHS[key] = cls(
                max_value_bytes,
                list(EVENT_TYPES),
                list(DEVICES),
                list(AMOUNT_REQUIRED_FOR),
                list(SUPPORTED_SCHEMA_VERSIONS),
                [name for name, _ in REQUIRED_FIELDS],
                [json_type for _, json_type in REQUIRED_FIELDS],
                [name for name, _ in PROPERTY_FIELDS],
                [json_type for _, json_type in PROPERTY_FIELDS],
                list(TYPED_FIELDS[5:]),
                MAX_ID_CHARS,
                [bound for pair in FORBIDDEN_ID_CHARS for bound in pair],
            )
    return _FAST_PATHS[key]


def stage_events(raw: DataFrame, *, max_value_bytes: int) -> DataFrame:
    """Kafka records through the validator's JVM fast path, as STAGED_COLUMNS.

    A plainly valid event is typed and final (`in_doubt` false, no bytes). So is a record
    that check_record's first two rules reject, a null key or a value over
    ``max_value_bytes``: its reason is set and its bytes kept, with no parse. Any other
    record is `in_doubt`: typed columns null, `raw_key` and `raw_value` its bytes,
    `reject_reason` null until :func:`check_doubtful` decides. Without the fast path's jar
    every record but those two kinds is in doubt.
    """
    fast = _fast_path(raw.sparkSession, max_value_bytes)
    typed = (
        F.lit(None).cast(f"struct<{TYPED_SCHEMA}>")
        if fast is None
        else JvmColumn(fast.column(F.col("key")._jc, F.col("value")._jc, TYPED_SCHEMA))
    )
    # check_record's first two rules read no byte of the value (docs/decisions.md, 48).
    rejected = F.when(F.col("key").isNull(), F.lit("null_key")).when(
        F.octet_length(F.col("value")) > F.lit(max_value_bytes), F.lit("oversized_value")
    )
    # Two projections, so that the fast path runs once per record, not once per use.
    staged = raw.select(
        *[F.col(c) for c in _KAFKA_COLUMNS], typed.alias(_FAST), rejected.alias(_REJECTED)
    )
    untyped = F.col(_FAST).isNull()
    coordinates = zip(_COORDINATE_COLUMNS, _SOURCE_COLUMNS, strict=True)
    return staged.select(
        *[F.col(f"{_FAST}.{name}").alias(name) for name in TYPED_FIELDS],
        *[F.col(c).alias(name) for c, name in coordinates],
        F.when(untyped, F.col("key")).alias("raw_key"),
        F.when(untyped, F.col("value")).alias("raw_value"),
        F.col(_REJECTED).alias("reject_reason"),
        utc_date(F.col(f"{_FAST}.event_time")).alias("event_date"),
        (untyped & F.col(_REJECTED).isNull()).alias("in_doubt"),
    )


def check_doubtful(staged: DataFrame, *, max_value_bytes: int) -> DataFrame:
    """The staged records in doubt, checked by features.validate.check_records in Spark's
    Python workers on Arrow batches (so it scales with the executors), as STAGED_COLUMNS
    (no longer in doubt)."""
    coordinates = zip(_SOURCE_COLUMNS, _COORDINATE_COLUMNS, strict=True)
    checked = (
        staged.where(F.col("in_doubt"))
        .select(
            *[F.col(c).alias(name) for c, name in coordinates],
            F.col("raw_key").alias("key"),
            F.col("raw_value").alias("value"),
        )
        .mapInArrow(_parser(max_value_bytes), PARSED_SCHEMA)
    )
    return checked.select(
        *[F.col(c) for c in PARSED_COLUMNS],
        utc_date(F.col("event_time")).alias("event_date"),
        F.lit(False).alias("in_doubt"),
    )


def _as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC; PySpark would otherwise read them in local time."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def time_rules(
    batch: pd.DataFrame,
    *,
    earliest_event_time: datetime | None = None,
    max_event_time: datetime | None = None,
    min_event_time: datetime | None = None,
    max_skew_after_record_s: int | None = None,
) -> pd.Series:
    """Each row's reason after the time rules: still-valid events before the earliest
    possible time become `before_earliest_event_time`, those from the future
    `future_event_time`, those too late `too_late`; earlier reasons are kept.

    ``batch`` is a driver-side frame with `event_time`, `kafka_timestamp` (UTC) and
    `reject_reason` (the stream applies the rules to the verdict columns it holds, so its
    Spark job builds no per-batch expressions for them: docs/decisions.md, decision 43).

    - earliest_event_time: events before it are no real events (the epoch, a zero
      timestamp: stream_features.earliest_event_time);
    - max_event_time: events after it are from the future (a fixed bound, e.g. for backfills);
    - max_skew_after_record_s: events more than this after their own Kafka record timestamp
      (the producer's wall clock when it sent them) are from the future. Per record, so a
      replayed micro-batch gets the same verdicts whenever it is reprocessed;
    - min_event_time: events before it are too late (the job passes its event-time clock
      minus the allowed lateness).

    None skips a rule; naive datetimes are read as UTC.
    """
    reason = batch["reject_reason"].astype(object).copy()
    event_time = pd.to_datetime(batch["event_time"], utc=True)
    valid = reason.isna() & event_time.notna()
    if earliest_event_time is not None:
        too_early = valid & (event_time < pd.Timestamp(_as_utc(earliest_event_time)))
        reason[too_early] = "before_earliest_event_time"
        valid &= ~too_early
    too_new = pd.Series(False, index=batch.index)
    if max_event_time is not None:
        too_new |= event_time > pd.Timestamp(_as_utc(max_event_time))
    if max_skew_after_record_s is not None:
        horizon = pd.to_datetime(batch["kafka_timestamp"], utc=True) + pd.Timedelta(
            seconds=max_skew_after_record_s
        )
        too_new |= event_time > horizon
    reason[valid & too_new] = "future_event_time"
    if min_event_time is not None:
        too_old = valid & ~too_new & (event_time < pd.Timestamp(_as_utc(min_event_time)))
        reason[too_old] = "too_late"
    return reason


def duplicate_copies(batch: pd.DataFrame) -> pd.Series:
    """True for each still-valid row of a driver-side frame that is a later copy of an
    event_id: the copy kept has the lowest (source_partition, source_offset, source_topic),
    so the verdict does not depend on how rows arrive. The stream applies it to the batch it
    already holds, so that its Spark job needs no shuffle (docs/decisions.md, decision 31);
    the backfill from a log runs the same batches."""
    valid = batch[batch["reject_reason"].isna()]
    ordered = valid.sort_values(["source_partition", "source_offset", "source_topic"])
    later = ordered["event_id"].duplicated(keep="first")
    return later.reindex(batch.index, fill_value=False).astype(bool)
