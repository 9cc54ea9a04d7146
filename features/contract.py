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

# The ids that key tables and topics: at most MAX_ID_CHARS characters, and none of the
# characters that hide or reorder text where an id is shown (C0/C1 controls, the bidi
# marks, embeddings, overrides and isolates). Anything else is invalid_value:<id>.
ID_FIELDS: tuple[str, ...] = ("event_id", "user_id")
MAX_ID_CHARS = 256
FORBIDDEN_ID_CHARS: tuple[tuple[int, int], ...] = (  # inclusive code point ranges
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0x061C, 0x061C),
    (0x200E, 0x200F),
    (0x202A, 0x202E),
    (0x2066, 0x2069),
)
