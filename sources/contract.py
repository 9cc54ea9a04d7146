"""Event contract v1 as the sources see it: vocabulary, and a light checker.

The vocabulary is features/contract.py's. The stream job owns authoritative validation
(features/events.py, docs/events.md; its rejects go to the dead-letter topic). This checker
exists so the sources can count what they emit that the stream will reject, and so their tests can assert every generated event is valid without importing Spark.
"""

from __future__ import annotations

import re
from typing import Any

from features.contract import AMOUNT_REQUIRED_FOR, DEVICES, EVENT_TYPES, SUPPORTED_SCHEMA_VERSIONS

SCHEMA_VERSION = SUPPORTED_SCHEMA_VERSIONS[-1]
# Event types whose events must carry an amount.
AMOUNT_REQUIRED: frozenset[str] = frozenset(AMOUNT_REQUIRED_FOR)

REQUIRED_FIELDS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "event_type",
    "event_time",
    "schema_version",
    "properties",
)
PROPERTY_TYPES: dict[str, tuple[type, ...]] = {
    "amount": (int, float),
    "currency": (str,),
    "quantity": (int,),
    "device": (str,),
    "session_id": (str,),
    "product_id": (str,),
    "query": (str,),
    "plan": (str,),
    "channel": (str,),
}
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# ISO-8601 UTC, millisecond precision, trailing Z.
EVENT_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def contract_errors(event: dict[str, Any]) -> list[str]:
    """Reasons `event` breaks contract v1 (empty when valid)."""
    errors = [f"missing {f}" for f in REQUIRED_FIELDS if f not in event]
    if errors:
        return errors
    for f in ("event_id", "user_id", "event_type", "event_time"):
        if not isinstance(event[f], str) or not event[f]:
            errors.append(f"{f} must be a non-empty string")
    if event["schema_version"] != SCHEMA_VERSION:
        errors.append("schema_version must be 1")
    if event["event_type"] not in EVENT_TYPES:
        errors.append(f"unknown event_type {event['event_type']!r}")
    if isinstance(event["event_time"], str) and not EVENT_TIME_RE.match(event["event_time"]):
        errors.append(f"bad event_time {event['event_time']!r}")
    props = event["properties"]
    if not isinstance(props, dict):
        return [*errors, "properties must be an object"]
    for name, value in props.items():
        allowed = PROPERTY_TYPES.get(name)
        # Unknown properties are ignored downstream (docs/events.md), so they are not errors.
        if allowed and (isinstance(value, bool) or not isinstance(value, allowed)):
            errors.append(f"property {name} has type {type(value).__name__}")
    if event["event_type"] in AMOUNT_REQUIRED and "amount" not in props:
        errors.append(f"{event['event_type']} requires amount")
    amount = props.get("amount")
    if isinstance(amount, int | float) and not amount >= 0:  # also catches NaN
        errors.append("amount must be >= 0")
    quantity = props.get("quantity")
    if isinstance(quantity, int) and quantity < 0:
        errors.append("quantity must be >= 0")
    if isinstance(props.get("currency"), str) and not CURRENCY_RE.match(props["currency"]):
        errors.append(f"bad currency {props['currency']!r}")
    if "device" in props and props["device"] not in DEVICES:
        errors.append(f"unknown device {props['device']!r}")
    return errors
