"""The contract's table of cases: raw Kafka (key, value) pairs and the reason each gets.

One table, run through every side that checks events: the pure-Python validator
(features.validate), Spark's parse_events (tests/features/test_events.py) and the sources'
checker (tests/sources/test_contract.py). Not a test module.
"""

from __future__ import annotations

import json

MAX_BYTES = 512
DROP = object()  # marks a field to leave out of the JSON


def event(props: dict | object | None = None, **fields: object) -> str:
    """A valid purchase event as JSON, with fields overridden (DROP removes one)."""
    doc: dict = {
        "event_id": "e-1",
        "user_id": "u-1",
        "event_type": "purchase",
        "event_time": "2024-03-01T12:34:56.789Z",
        "schema_version": 1,
        "properties": {"amount": 19.99, "currency": "GBP", "quantity": 2, "device": "web"},
    }
    if props is not None:
        doc["properties"] = props
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not DROP})


def p(**overrides: object) -> dict:
    """Valid purchase properties with overrides."""
    return {"amount": 19.99, "currency": "GBP", "quantity": 2, "device": "web", **overrides}


BAD_INPUTS: list[tuple[bytes | str | None, bytes | str | None, str]] = [
    (None, event(), "null_key"),
    (None, b"\xff" * (MAX_BYTES + 1), "null_key"),  # first rule wins
    ("u-1", event(padding="x" * MAX_BYTES), "oversized_value"),
    ("u-1", b"\xff\xfe{}", "not_utf8"),
    ("u-1", None, "not_json"),  # tombstone
    ("u-1", "", "not_json"),
    ("u-1", "not json", "not_json"),
    ("u-1", '{"event_id": "e-1",', "not_json"),
    ("u-1", "[1, 2]", "not_json"),
    ("u-1", ' \n\t[{"event_id": "e-1"}]', "not_json"),  # whitespace, then not an object
    ("u-1", "  7", "not_json"),
    ("u-1", '"a string"', "not_json"),
    ("u-1", "null", "not_json"),
    ("u-1", '{"event_id": "a", "event_id": "b"}', "not_json"),
    ("u-1", event(event_id="e-\ud800"), "not_json"),  # an unpaired surrogate escape
    ("u-1", event(schema_version=DROP), "missing_field:schema_version"),
    ("u-1", event(schema_version=None), "missing_field:schema_version"),
    ("u-1", event(schema_version="1"), "wrong_type:schema_version"),
    ("u-1", event(schema_version=1.5), "wrong_type:schema_version"),
    ("u-1", event(schema_version=2), "unknown_schema_version"),
    ("u-1", event(schema_version=99999999999), "unknown_schema_version"),
    ("u-1", event(schema_version=2, event_id=DROP), "unknown_schema_version"),
    ("u-1", event(event_id=DROP), "missing_field:event_id"),
    ("u-1", event(event_id=""), "missing_field:event_id"),
    ("u-1", event(event_id=DROP, user_id=5), "missing_field:event_id"),
    ("u-1", event(user_id=None), "missing_field:user_id"),
    ("u-1", event(event_type=DROP), "missing_field:event_type"),
    ("u-1", event(event_time=DROP), "missing_field:event_time"),
    ("u-1", event(props={"currency": "GBP"}), "missing_field:amount"),
    ("u-1", event(event_type="refund", properties=DROP), "missing_field:amount"),
    ("u-1", event(event_id=123), "wrong_type:event_id"),
    ("u-1", event(user_id=True), "wrong_type:user_id"),
    ("u-1", event(event_type=["purchase"]), "wrong_type:event_type"),
    ("u-1", event(event_time=1709296496), "wrong_type:event_time"),
    ("u-1", event(event_type="page_view", properties="web"), "wrong_type:properties"),
    ("u-1", event(props=p(amount="19.99")), "wrong_type:amount"),
    ("u-1", event(props=p(amount="x"), event_type="login"), "wrong_type:amount"),
    ("u-1", event(props=p(currency=826)), "wrong_type:currency"),
    ("u-1", event(props=p(quantity=1.5)), "wrong_type:quantity"),
    ("u-1", event(props=p(device=1)), "wrong_type:device"),
    ("u-1", event(props=p(session_id={})), "wrong_type:session_id"),
    ("u-1", event(props=p(product_id=3)), "wrong_type:product_id"),
    ("u-1", event(props=p(query=5)), "wrong_type:query"),
    ("u-1", event(props=p(plan=[1])), "wrong_type:plan"),
    ("u-1", event(props=p(channel=False)), "wrong_type:channel"),
    ("u-1", event(event_type="login"), "unknown_event_type"),
    ("u-1", event(event_type="Purchase"), "unknown_event_type"),
    ("u-1", event(event_time="2024-03-01 12:34:56Z"), "invalid_value:event_time"),
    ("u-1", event(event_time="2024-03-01T12:34:56"), "invalid_value:event_time"),
    ("u-1", event(event_time="2024-02-30T00:00:00Z"), "invalid_value:event_time"),
    ("u-1", event(event_time="yesterday"), "invalid_value:event_time"),
    ("u-1", event(props=p(amount=-0.01)), "invalid_value:amount"),
    ("u-1", event(props={"amount": 10**309}), "invalid_value:amount"),  # no double holds it
    ("u-1", event(props={"amount": -(10**309)}), "invalid_value:amount"),
    ("u-1", event(props=p(currency="gbp")), "invalid_value:currency"),
    ("u-1", event(props=p(currency="POUND")), "invalid_value:currency"),
    ("u-1", event(props=p(quantity=-1)), "invalid_value:quantity"),
    ("u-1", event(props=p(quantity=3_000_000_000)), "invalid_value:quantity"),
    ("u-1", event(props=p(device="tv")), "invalid_value:device"),
    ("u-2", event(props=p(device="tv")), "invalid_value:device"),
    ("u-2", event(), "key_mismatch"),
    (b"\xff", event(), "key_mismatch"),
    ("u-1", event(), None),  # the base event is valid
    ("u-1", " \r\n\t" + event() + "\n", None),  # JSON whitespace around it too
]
