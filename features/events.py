"""Event contract v1: parse Kafka records into typed events and say why a record is rejected.

Every function here is a pure DataFrame -> DataFrame transform. Parsing never drops a row
and never fails the query: a bad record gets a `reject_reason` instead. The contract and the
reason codes (with their order) are documented in docs/events.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features.contract import (
    AMOUNT_REQUIRED_FOR,
    DEVICES,
    EVENT_TYPES,
    PROPERTY_FIELDS,
    REQUIRED_FIELDS,
    SUPPORTED_SCHEMA_VERSIONS,
)

_PARSE_REASONS: tuple[str, ...] = (
    "null_key",
    "oversized_value",
    "not_utf8",
    "not_json",
    "missing_field:schema_version",
    "wrong_type:schema_version",
    "unknown_schema_version",
    *[f"missing_field:{name}" for name, _ in REQUIRED_FIELDS[:-1]],
    "missing_field:amount",
    *[f"wrong_type:{name}" for name, _ in REQUIRED_FIELDS[:-1]],
    "wrong_type:properties",
    *[f"wrong_type:{name}" for name, _ in PROPERTY_FIELDS],
    "unknown_event_type",
    "invalid_value:event_time",
    "invalid_value:amount",
    "invalid_value:currency",
    "invalid_value:quantity",
    "invalid_value:device",
    "key_mismatch",
)
# Every reject reason, in the order the rules are checked: the first failing rule wins.
# parse_events sets the first block; apply_time_rules and mark_duplicates, which run after
# it, set the last three.
REJECT_REASONS: tuple[str, ...] = (
    *_PARSE_REASONS,
    "future_event_time",
    "too_late",
    "duplicate_event_id",
)

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "event_type",
    "event_time",
    "schema_version",
    "amount",
    "currency",
    "quantity",
    "device",
    "session_id",
    "product_id",
    "plan",
    "channel",
    "source_topic",
    "source_partition",
    "source_offset",
    "kafka_timestamp",
)
PARSED_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, "raw_key", "raw_value", "reject_reason")

_ISO_8601 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT")
_EXTRACT_AS = {"string": "string", "integer": "int", "number": "double"}


def utc_date(ts: Column) -> Column:
    """Calendar date of a timestamp in UTC, whatever the session time zone (F.to_date is not)."""
    return F.date_from_unix_date(F.floor(F.unix_micros(ts) / F.lit(86_400_000_000)).cast("int"))


def _type_of(doc: Column, path: str) -> Column:
    """Variant type name at path: null when the path is absent, 'VOID' for JSON null."""
    return F.schema_of_variant(F.variant_get(doc, path, "variant"))


def _has_type(type_name: Column, json_type: str) -> Column:
    """Whether a variant type name (schema_of_variant) is of this JSON type; false when absent.

    Plain comparisons, not regexes: every rule of every row evaluates these.
    """
    if json_type == "string":
        is_type = type_name == "STRING"
    elif json_type == "object":
        is_type = type_name.startswith("OBJECT<")
    elif json_type == "integer":
        is_type = type_name.isin(*_INTEGER_TYPES) | (
            type_name.startswith("DECIMAL(") & type_name.endswith(",0)")
        )
    elif json_type == "number":
        is_type = type_name.isin(*_INTEGER_TYPES, "FLOAT", "DOUBLE") | type_name.startswith(
            "DECIMAL("
        )
    else:
        raise ValueError(f"unknown JSON type {json_type!r}")
    return F.coalesce(is_type, F.lit(False))


def _absent(type_name: Column) -> Column:
    return type_name.isNull() | (type_name == "VOID")


def _first_match(rules: list[tuple[Column, str]]) -> Column:
    """CASE WHEN over (condition, reason) pairs; null conditions count as passing."""
    first_cond, first_reason = rules[0]
    chain = F.when(first_cond, F.lit(first_reason))
    return reduce(lambda acc, rule: acc.when(rule[0], F.lit(rule[1])), rules[1:], chain)


def parse_events(raw: DataFrame, *, max_value_bytes: int) -> DataFrame:
    """Parse Kafka records (key, value, topic, partition, offset, timestamp) into typed events.

    One output row per input row. `reject_reason` is null for a valid event and otherwise
    the first failing rule in REJECT_REASONS. Typed columns are filled wherever the field has
    the right JSON type, also on rejected rows (handy in the quarantine table); trust them
    only where reject_reason is null. JSON is parsed only for records that passed the size
    and UTF-8 checks, so an oversized record costs no parsing.
    """
    text = F.col("value").cast("string")
    pre_reason = _first_match(
        [
            (F.col("key").isNull(), "null_key"),
            (F.octet_length("value") > F.lit(max_value_bytes), "oversized_value"),
            (~F.is_valid_utf8(text), "not_utf8"),
        ]
    )
    paths = {name: f"$.{name}" for name, _ in REQUIRED_FIELDS}
    paths["properties"] = "$.properties"
    paths.update({name: f"$.properties.{name}" for name, _ in PROPERTY_FIELDS})

    staged = raw.select(
        F.col("key").alias("raw_key"),
        F.col("value").alias("raw_value"),
        F.col("topic").alias("source_topic"),
        F.col("partition").alias("source_partition"),
        F.col("offset").alias("source_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        pre_reason.alias("_pre_reason"),
        F.when(pre_reason.isNull(), F.try_parse_json(text)).alias("_doc"),
        # Parsed JSON is an object exactly when its first non-whitespace character is "{".
        # Much cheaper than schema_of_variant on the whole document, which builds its type.
        text.rlike(r"^[ \t\n\r]*\{").alias("_is_object"),
    )
    doc = F.col("_doc")
    json_types = dict(REQUIRED_FIELDS) | {"properties": "object"} | dict(PROPERTY_FIELDS)
    typed = staged.select(
        "*",
        *[_type_of(doc, path).alias(f"_t_{name}") for name, path in paths.items()],
    )

    def t(name: str) -> Column:
        return F.col(f"_t_{name}")

    # Each field once: whether it has its contract type, and its value as that type (null
    # when absent or of another type). The rules below read these columns many times over.
    fields = typed.select(
        "*",
        *[_has_type(t(name), json_types[name]).alias(f"_ok_{name}") for name in json_types],
        *[
            F.when(
                _has_type(t(name), json_type),
                F.try_variant_get(doc, paths[name], _EXTRACT_AS[json_type]),
            ).alias(f"_v_{name}")
            for name, json_type in json_types.items()
            if json_type != "object"
        ],
    )

    def ok(name: str) -> Column:
        return F.col(f"_ok_{name}")

    def value(name: str) -> Column:
        """The field as its contract type, or null when absent or of another type."""
        return F.col(f"_v_{name}")

    event_time_text = value("event_time")
    staged_time = fields.select(
        "*",
        F.when(event_time_text.rlike(_ISO_8601), F.try_to_timestamp(event_time_text)).alias(
            "_event_time"
        ),
    )
    event_type = value("event_type")
    event_time = F.col("_event_time")
    schema_version = value("schema_version")
    amount, quantity = value("amount"), value("quantity")
    user_id = value("user_id")

    def missing(name: str) -> Column:
        """Absent, JSON null, or (for strings) empty."""
        if json_types[name] == "string":
            return _absent(t(name)) | (value(name) == "")
        return _absent(t(name))

    def wrong_type(name: str) -> Column:
        return ~_absent(t(name)) & ~ok(name)

    required_names = [name for name, _ in REQUIRED_FIELDS[:-1]]  # schema_version is checked first
    rules: list[tuple[Column, str]] = [
        (doc.isNull() | ~F.coalesce(F.col("_is_object"), F.lit(False)), "not_json"),
        (missing("schema_version"), "missing_field:schema_version"),
        (wrong_type("schema_version"), "wrong_type:schema_version"),
        (
            ~F.coalesce(schema_version.isin(*SUPPORTED_SCHEMA_VERSIONS), F.lit(False)),
            "unknown_schema_version",
        ),
        *[(missing(name), f"missing_field:{name}") for name in required_names],
        (event_type.isin(*AMOUNT_REQUIRED_FOR) & _absent(t("amount")), "missing_field:amount"),
        *[(wrong_type(name), f"wrong_type:{name}") for name in required_names],
        (wrong_type("properties"), "wrong_type:properties"),
        *[(wrong_type(name), f"wrong_type:{name}") for name, _ in PROPERTY_FIELDS],
        (~event_type.isin(*EVENT_TYPES), "unknown_event_type"),
        (event_time.isNull(), "invalid_value:event_time"),
        (amount < 0, "invalid_value:amount"),
        (~value("currency").rlike(r"^[A-Z]{3}$"), "invalid_value:currency"),
        (~_absent(t("quantity")) & (quantity.isNull() | (quantity < 0)), "invalid_value:quantity"),
        (~value("device").isin(*DEVICES), "invalid_value:device"),
        (
            ~F.coalesce(F.col("raw_key") == F.encode(user_id, "UTF-8"), F.lit(False)),
            "key_mismatch",
        ),
    ]
    if ("null_key", "oversized_value", "not_utf8", *[r for _, r in rules]) != _PARSE_REASONS:
        raise RuntimeError("parse_events rules are out of step with REJECT_REASONS")
    return staged_time.select(
        value("event_id").alias("event_id"),
        user_id.alias("user_id"),
        event_type.alias("event_type"),
        event_time.alias("event_time"),
        schema_version.alias("schema_version"),
        amount.alias("amount"),
        value("currency").alias("currency"),
        quantity.alias("quantity"),
        value("device").alias("device"),
        value("session_id").alias("session_id"),
        value("product_id").alias("product_id"),
        value("plan").alias("plan"),
        value("channel").alias("channel"),
        F.col("source_topic"),
        F.col("source_partition"),
        F.col("source_offset"),
        F.col("kafka_timestamp"),
        F.col("raw_key"),
        F.col("raw_value"),
        F.coalesce(F.col("_pre_reason"), _first_match(rules)).alias("reject_reason"),
    )


def _as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC; PySpark would otherwise read them in local time."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def apply_time_rules(
    parsed: DataFrame,
    *,
    max_event_time: datetime | None = None,
    min_event_time: datetime | None = None,
    max_skew_after_record_s: int | None = None,
) -> DataFrame:
    """Reject still-valid events from the future (`future_event_time`) or too late (`too_late`).

    - max_event_time: events after it are from the future (a fixed bound, e.g. for backfills);
    - max_skew_after_record_s: events more than this after their own Kafka record timestamp
      (the producer's wall clock when it sent them) are from the future. Per record, so a
      replayed micro-batch gets the same verdicts whenever it is reprocessed;
    - min_event_time: events before it are too late (the job passes its event-time clock
      minus the allowed lateness).

    None skips a rule; naive datetimes are read as UTC; earlier reasons are kept.
    """
    reason = F.col("reject_reason")
    event_time = F.col("event_time")
    too_new = F.lit(False)
    if max_event_time is not None:
        too_new = too_new | (event_time > F.lit(_as_utc(max_event_time)))
    if max_skew_after_record_s is not None:
        horizon = F.col("kafka_timestamp") + F.make_interval(secs=F.lit(max_skew_after_record_s))
        too_new = too_new | (event_time > horizon)
    reason = F.when(reason.isNull() & too_new, F.lit("future_event_time")).otherwise(reason)
    if min_event_time is not None:
        too_old = reason.isNull() & (event_time < F.lit(_as_utc(min_event_time)))
        reason = F.when(too_old, F.lit("too_late")).otherwise(reason)
    return parsed.select(
        *[F.col(c) for c in parsed.columns if c != "reject_reason"], reason.alias("reject_reason")
    )


def mark_seen(parsed: DataFrame, seen_event_ids: DataFrame) -> DataFrame:
    """Mark still-valid rows whose event_id is in ``seen_event_ids`` as `duplicate_event_id`.

    ``seen_event_ids`` (one column, event_id) holds the ids already stored, e.g. the bronze
    table's ids on the batch's event dates: a resent event keeps its event_time.
    """
    seen = seen_event_ids.select(F.col("event_id").alias("_seen_id")).distinct()
    joined = parsed.join(seen, on=F.col("event_id") == F.col("_seen_id"), how="left")
    reason = F.when(
        F.col("reject_reason").isNull() & F.col("_seen_id").isNotNull(), F.lit("duplicate_event_id")
    ).otherwise(F.col("reject_reason"))
    return joined.select(
        *[F.col(c) for c in parsed.columns if c != "reject_reason"], reason.alias("reject_reason")
    )


def mark_duplicates(parsed: DataFrame) -> DataFrame:
    """Mark later copies of an event_id among still-valid rows as `duplicate_event_id`.

    The copy kept is the one with the lowest (source_partition, source_offset, source_topic),
    so the result does not depend on how Spark orders rows. Duplicates against events already
    stored are the job's business (it needs state); this handles one DataFrame.
    """
    valid = F.col("reject_reason").isNull()
    order = Window.partitionBy(F.col("event_id"), valid).orderBy(
        F.col("source_partition"), F.col("source_offset"), F.col("source_topic")
    )
    reason = F.when(
        valid & (F.row_number().over(order) > 1), F.lit("duplicate_event_id")
    ).otherwise(F.col("reject_reason"))
    return parsed.select(
        *[F.col(c) for c in parsed.columns if c != "reject_reason"], reason.alias("reject_reason")
    )


def valid_events(parsed: DataFrame) -> DataFrame:
    """The bronze rows: valid events with their typed and source columns (no raw bytes)."""
    return parsed.where(F.col("reject_reason").isNull()).select(*[F.col(c) for c in EVENT_COLUMNS])


def rejected_events(parsed: DataFrame) -> DataFrame:
    """The dead-letter rows: raw bytes, reason and Kafka coordinates of every rejected record."""
    return parsed.where(F.col("reject_reason").isNotNull()).select(
        F.col("raw_key"),
        F.col("raw_value"),
        F.col("reject_reason"),
        F.col("source_topic"),
        F.col("source_partition"),
        F.col("source_offset"),
        F.col("kafka_timestamp"),
    )
