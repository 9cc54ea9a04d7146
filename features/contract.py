"""Event contract v1: the vocabulary and field types, as plain Python (no Spark).

The one source of truth for the event types, devices and fields: features/events.py
validates against it in Spark, the sources generate events from it, docs/events.md
describes it.
"""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = (
    "session_start",
    "page_view",
    "search",
    "cart_add",
    "cart_remove",
    "checkout",
    "purchase",
    "refund",
    "support_contact",
    "subscription_start",
    "subscription_change",
    "subscription_cancel",
)
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (1,)
DEVICES: tuple[str, ...] = ("web", "ios", "android", "other")
AMOUNT_REQUIRED_FOR: tuple[str, ...] = ("purchase", "refund")

# (field, JSON type) in contract order; the order is also the order of per-field checks.
REQUIRED_FIELDS: tuple[tuple[str, str], ...] = (
    ("event_id", "string"),
    ("user_id", "string"),
    ("event_type", "string"),
    ("event_time", "string"),
    ("schema_version", "integer"),
)
PROPERTY_FIELDS: tuple[tuple[str, str], ...] = (
    ("amount", "number"),
    ("currency", "string"),
    ("quantity", "integer"),
    ("device", "string"),
    ("session_id", "string"),
    ("product_id", "string"),
    ("query", "string"),
    ("plan", "string"),
    ("channel", "string"),
)
