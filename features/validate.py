"""Event contract v1, checked record by record: the one validator every side runs.

Pure Python, no Spark: the stream and the backfill run it inside Spark's executors
(features.events.check_doubtful, through ``mapInArrow``) on every record that the JVM fast
path (jvm/validator) is not sure it accepts, the sources run it on what they emit
(sources.contract), and the tests run one table of cases through each of them.

:func:`check_record` takes a Kafka record's key and value bytes and returns the event's
typed fields and the first failing rule's reason (None for a valid event), in the order of
``PARSE_REASONS`` (docs/events.md). The JSON type rules are exact: a ``"1"`` is not a ``1``,
``true`` is not an integer, ``1.0`` is (its value is integral) and ``1e3`` is not (an
exponent makes a floating-point number). Typed fields are filled wherever the field has its
contract type, also on rejected records (handy in the quarantine); trust them only where the
reason is None.

:func:`check_records` is what Spark runs on a batch: the same verdicts, with a fast path
for the records that are plainly valid (:func:`_plainly_valid`, about half the cost);
whatever it has the least doubt about goes through :func:`check_record`
(docs/decisions.md, decision 39).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from features.contract import (
    AMOUNT_REQUIRED_FOR,
    DEVICES,
    EVENT_TYPES,
    FORBIDDEN_ID_CHARS,
    ID_FIELDS,
    MAX_ID_CHARS,
    PROPERTY_FIELDS,
    REQUIRED_FIELDS,
    SUPPORTED_SCHEMA_VERSIONS,
)

_REQUIRED = [name for name, _ in REQUIRED_FIELDS if name != "schema_version"]
PARSE_REASONS: tuple[str, ...] = (
    "null_key",
    "oversized_value",
    "not_utf8",
    "not_json",
    "missing_field:schema_version",
    "wrong_type:schema_version",
    "unknown_schema_version",
    *[f"missing_field:{name}" for name in _REQUIRED],
    "missing_field:amount",
    *[f"wrong_type:{name}" for name in _REQUIRED],
    "wrong_type:properties",
    *[f"wrong_type:{name}" for name, _ in PROPERTY_FIELDS],
    "unknown_event_type",
    "invalid_value:event_time",
    "invalid_value:amount",
    "invalid_value:currency",
    "invalid_value:quantity",
    "invalid_value:device",
    *[f"invalid_value:{name}" for name in ID_FIELDS],
    "key_mismatch",
)
# The typed fields of an event, in output order (quantity and schema_version are 32-bit).
TYPED_FIELDS: tuple[str, ...] = (
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
)

_ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})", re.ASCII
)
_CURRENCY = re.compile(r"[A-Z]{3}")
DEFAULT_MAX_VALUE_BYTES = 65536  # stream_features.max_value_bytes' default
_INT32 = 2**31
_MAX_DECIMAL_DIGITS = 38  # wider integral numbers are floating point, as in Spark's variant
_EVENT_TYPES = frozenset(EVENT_TYPES)
_DEVICES = frozenset(DEVICES)
_AMOUNT_REQUIRED = frozenset(AMOUNT_REQUIRED_FOR)
_VERSIONS = frozenset(SUPPORTED_SCHEMA_VERSIONS)
_PROPERTIES = [name for name, _ in PROPERTY_FIELDS]
_FORBIDDEN_ID_CHAR = re.compile(
    "[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in FORBIDDEN_ID_CHARS) + "]"
)


def plain_id(text: str) -> bool:
    """An id of at most MAX_ID_CHARS characters, none of them FORBIDDEN_ID_CHARS."""
    return len(text) <= MAX_ID_CHARS and _FORBIDDEN_ID_CHAR.search(text) is None


class _NotJson(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _NotJson("duplicate key")
    return obj


def _number(token: str) -> int | float:
    """A JSON number with a fraction or an exponent: integral decimals are integers."""
    if "e" in token or "E" in token:
        return float(token)
    whole, _, fraction = token.partition(".")
    if fraction.strip("0") == "" and len(whole.lstrip("-")) <= _MAX_DECIMAL_DIGITS:
        return int(whole)
    return float(token)


def _no_constants(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_float=_number, parse_constant=_no_constants
)


# A \u escape of a UTF-16 surrogate: paired, the decoder makes one character of two;
# unpaired, it leaves a string no UTF-8 (Arrow, Parquet, Kafka) can hold.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object ``text`` holds (surrounding JSON whitespace allowed), else None.

    Strings must be Unicode: an unpaired surrogate escape makes the text not JSON here
    (as in I-JSON, RFC 7493), since no table or topic downstream could store it."""
    try:
        doc = _DECODER.decode(text)
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        return None
    return doc if type(doc) is dict else None


def _is(value: Any, json_type: str) -> bool:
    kind = type(value)
    if json_type == "string":
        return kind is str
    if json_type == "integer":
        return kind is int and abs(value) < 10**_MAX_DECIMAL_DIGITS
    if json_type == "number":
        return kind is int or kind is float
    return kind is dict  # object


def _typed(value: Any, json_type: str) -> Any:
    """A value of its contract type as the column's type (None: a 32-bit integer overflows)."""
    if json_type == "integer":
        return value if -_INT32 <= value < _INT32 else None
    if json_type == "number":
        try:
            return float(value)
        except OverflowError:  # an integer beyond a double's range: not finite either
            return math.inf if value > 0 else -math.inf
    return value


def event_time(text: Any) -> datetime | None:
    """ISO-8601 with a date, a time to the second (optional fraction) and a zone, in UTC."""
    if type(text) is not str or not _ISO_8601.fullmatch(text):
        return None
    head, dot, rest = text.partition(".")
    if dot:  # microseconds at most: Spark's timestamps stop there
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def check_record(
    key: bytes | None, value: bytes | None, max_value_bytes: int
) -> tuple[dict[str, Any], str | None]:
    """(typed fields, reject reason or None) for one Kafka record; the first failing rule wins."""
    fields: dict[str, Any] = dict.fromkeys(TYPED_FIELDS)
    if key is None:
        return fields, "null_key"
    if value is not None and len(value) > max_value_bytes:
        return fields, "oversized_value"
    if value is None:
        return fields, "not_json"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return fields, "not_utf8"
    doc = parse_json_object(text)
    if doc is None:
        return fields, "not_json"
    return fields, _check_doc(doc, key, fields)


_TOP_LEVEL = [(name, json_type) for name, json_type in REQUIRED_FIELDS]


def _check_doc(doc: dict[str, Any], key: bytes, fields: dict[str, Any]) -> str | None:
    props = doc.get("properties")
    props_ok = type(props) is dict
    present: set[str] = set()  # fields present and not JSON null
    mistyped: set[str] = set()
    for source, names in ((doc, _TOP_LEVEL), (props if props_ok else {}, PROPERTY_FIELDS)):
        for name, json_type in names:
            value = source.get(name)  # type: ignore[union-attr]
            if value is None:
                continue
            present.add(name)
            if not _is(value, json_type):
                mistyped.add(name)
            elif name in fields:
                fields[name] = _typed(value, json_type)
    fields["event_time"] = event_time(fields["event_time"])

    if "schema_version" not in present:
        return "missing_field:schema_version"
    if "schema_version" in mistyped:
        return "wrong_type:schema_version"
    if fields["schema_version"] not in _VERSIONS:
        return "unknown_schema_version"
    for name in _REQUIRED:
        if name not in present or doc[name] == "":
            return f"missing_field:{name}"
    event_type = fields["event_type"]
    if event_type in _AMOUNT_REQUIRED and "amount" not in present:
        return "missing_field:amount"
    if mistyped or (props is not None and not props_ok):
        for name in _REQUIRED:
            if name in mistyped:
                return f"wrong_type:{name}"
        if props is not None and not props_ok:
            return "wrong_type:properties"
        for name in _PROPERTIES:
            if name in mistyped:
                return f"wrong_type:{name}"
    if event_type not in _EVENT_TYPES:
        return "unknown_event_type"
    if fields["event_time"] is None:
        return "invalid_value:event_time"
    if fields["amount"] is not None and not 0 <= fields["amount"] < math.inf:
        return "invalid_value:amount"
    if fields["currency"] is not None and not _CURRENCY.fullmatch(fields["currency"]):
        return "invalid_value:currency"
    if "quantity" in present and (fields["quantity"] is None or fields["quantity"] < 0):
        return "invalid_value:quantity"
    if fields["device"] is not None and fields["device"] not in _DEVICES:
        return "invalid_value:device"
    for name in ID_FIELDS:
        if not plain_id(fields[name]):
            return f"invalid_value:{name}"
    if key != fields["user_id"].encode("utf-8"):
        return "key_mismatch"
    return None


# The fast path's event time: what _ISO_8601 accepts, with at most microseconds (what
# datetime.fromisoformat reads as check_record's padding does).
_PLAIN_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})", re.ASCII
)
# A quote, whitespace, a colon: a key may end there, out of sight of the key count below.
_SPACED_KEY_END = re.compile(rb'"[ \t\n\r]+:')
_STRING_PROPERTIES = ("session_id", "product_id", "query", "plan", "channel")
Row = tuple[Any, ...]


def _plainly_valid(key: bytes | None, value: bytes | None, max_value_bytes: int) -> Row | None:
    """The typed fields of a record that :func:`check_record` accepts, or None when unsure.

    Quicker because it tries only the path of a valid event: orjson instead of the hooked
    stdlib parser, straight-line type checks. It doubts anything unusual, and then
    check_record decides: arrays, objects other than the event and its properties, a
    float where an integer goes (``1.0`` is an integer to the contract, orjson cannot tell),
    any parse error, any failed rule. Duplicate keys (orjson keeps the last silently) are
    ruled out by counting: every key ends in ``"`` and ``:``, so when no quote is followed
    by whitespace and a colon, the ``":`` pairs in the bytes number at least the keys
    written; equal to the keys parsed means none was written twice.
    """
    if key is None or value is None or len(value) > max_value_bytes:
        return None
    if b"[" in value or _SPACED_KEY_END.search(value) is not None:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    props = doc.get("properties")
    if props is None:
        objects, keys, props = 1, len(doc), {}
    elif type(props) is dict:
        objects, keys = 2, len(doc) + len(props)
    else:
        return None
    if value.count(b"{") != objects or value.count(b'":') != keys:
        return None
    event_id, user_id = doc.get("event_id"), doc.get("user_id")
    event_type, moment = doc.get("event_type"), doc.get("event_time")
    version = doc.get("schema_version")
    if (
        type(version) is not int
        or version not in _VERSIONS
        or type(event_id) is not str
        or type(user_id) is not str
        or type(event_type) is not str
        or type(moment) is not str
        or not event_id
        or not user_id
        or event_type not in _EVENT_TYPES
        or _PLAIN_TIME.fullmatch(moment) is None
        or key != user_id.encode("utf-8")
        or not plain_id(event_id)
        or not plain_id(user_id)
    ):
        return None
    try:
        at = datetime.fromisoformat(moment).astimezone(UTC)
    except ValueError:
        return None
    amount, currency = props.get("amount"), props.get("currency")
    quantity, device = props.get("quantity"), props.get("device")
    if amount is None:
        if event_type in _AMOUNT_REQUIRED:
            return None
    elif type(amount) is int or type(amount) is float:
        amount = float(amount)
        if not 0 <= amount < math.inf:
            return None
    else:
        return None
    if currency is not None and (type(currency) is not str or not _CURRENCY.fullmatch(currency)):
        return None
    if quantity is not None and (type(quantity) is not int or not 0 <= quantity < _INT32):
        return None
    if device is not None and (type(device) is not str or device not in _DEVICES):
        return None
    strings = [props.get(name) for name in _STRING_PROPERTIES]
    if any(s is not None and type(s) is not str for s in strings):
        return None
    session_id, product_id, _, plan, channel = strings
    return (
        event_id,
        user_id,
        event_type,
        at,
        version,
        amount,
        currency,
        quantity,
        device,
        session_id,
        product_id,
        plan,
        channel,
    )


def check_records(
    keys: Sequence[bytes | None], values: Sequence[bytes | None], max_value_bytes: int
) -> tuple[list[Row], list[str | None]]:
    """check_record over a batch: (each record's typed fields in TYPED_FIELDS order, its reason)."""
    rows: list[Row] = []
    reasons: list[str | None] = []
    for key, value in zip(keys, values, strict=True):
        row = _plainly_valid(key, value, max_value_bytes)
        if row is None:
            fields, reason = check_record(key, value, max_value_bytes)
            row = tuple(fields.values())
        else:
            reason = None
        rows.append(row)
        reasons.append(reason)
    return rows, reasons
