"""Event contract v1 as the sources see it: the vocabulary, and the stream's own check.

The vocabulary is features/contract.py's; the check is features/validate.py's, the one
validator the stream runs on every Kafka record. So a source counts exactly what the stream
will reject, for the same reason (docs/events.md), without importing Spark.
"""

from __future__ import annotations

import json
from typing import Any

from features.contract import AMOUNT_REQUIRED_FOR, DEVICES, EVENT_TYPES, SUPPORTED_SCHEMA_VERSIONS
from features.validate import DEFAULT_MAX_VALUE_BYTES, check_record

__all__ = ["AMOUNT_REQUIRED", "DEVICES", "EVENT_TYPES", "SCHEMA_VERSION", "contract_errors"]

SCHEMA_VERSION = SUPPORTED_SCHEMA_VERSIONS[-1]
# Event types whose events must carry an amount.
AMOUNT_REQUIRED: frozenset[str] = frozenset(AMOUNT_REQUIRED_FOR)
_USER_ID = object()


def contract_errors(
    event: dict[str, Any],
    key: str | object | None = _USER_ID,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> list[str]:
    """The stream's reject reason for ``event`` sent as JSON with ``key`` (default: its
    user_id), as a one-item list; empty when the stream accepts it."""
    if key is _USER_ID:
        user = event.get("user_id")
        key = user if isinstance(user, str) else None
    raw_key = None if key is None else str(key).encode("utf-8")
    value = json.dumps(event, separators=(",", ":")).encode("utf-8")
    _, reason = check_record(raw_key, value, max_value_bytes)
    return [] if reason is None else [reason]
