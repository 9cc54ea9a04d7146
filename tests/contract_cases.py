"""The contract's table of cases: raw Kafka (key, value) pairs and the reason each gets.

One table, run through every side that checks events: the pure-Python validator
(features.validate), Spark's parse_events (tests/features/test_events.py) and the sources'
checker (tests/sources/test_contract.py). Not a test module.

Beside it, the inputs that hold the validator's shortcuts (its Python fast path and its
JVM fast path) to check_record's verdicts: near misses of a valid event, seeded random
byte edits of simulated events, and simulated events themselves.
"""

from __future__ import annotations

import itertools
import json
import random

from sources.simulator import SimulationConfig, simulate

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
    ("u-1", event() + " x", "not_json"),  # bytes after the value
    ("u-1", event() + event(), "not_json"),  # two values, one after the other
    ("u-1", event() + "7", "not_json"),
    ("u-1", event(event_id="e" * 257), "invalid_value:event_id"),  # MAX_ID_CHARS + 1
    ("u" * 257, event(user_id="u" * 257), "invalid_value:user_id"),
    ("u-1", event(event_id="e-\x001"), "invalid_value:event_id"),  # a control character
    ("u-1", event(event_id="e-\x9f"), "invalid_value:event_id"),
    ("u-\u202e1", event(user_id="u-\u202e1"), "invalid_value:user_id"),  # right-to-left override
    ("u-\u20661", event(user_id="u-\u20661"), "invalid_value:user_id"),  # an isolate
    ("u-1\n", event(user_id="u-1\n"), "invalid_value:user_id"),
    ("u-2", event(user_id="u" * 300), "invalid_value:user_id"),  # before key_mismatch
    ("u-2", event(), "key_mismatch"),
    (b"\xff", event(), "key_mismatch"),
    ("u-1", event(), None),  # the base event is valid
    ("u-1", event(event_id="e" * 256), None),  # ids of MAX_ID_CHARS
    ("u" * 256, event(user_id="u" * 256), None),
    ("u-\u00a0é", event(user_id="u-\u00a0é"), None),  # a no-break space is no control
    ("u-1", " \r\n\t" + event() + "\n", None),  # JSON whitespace around it too
]


def raw(x: bytes | str | None) -> bytes | None:
    return x.encode("utf-8") if isinstance(x, str) else x


def simulated(n: int) -> list[tuple[bytes, bytes]]:
    events = itertools.islice(simulate(SimulationConfig(n_users=200, days=30, seed=3)), n)
    return [(e["user_id"].encode(), json.dumps(e, separators=(",", ":")).encode()) for e in events]


NEAR_MISSES: list[tuple[str, str | bytes]] = [
    # duplicate keys, written every way JSON allows
    ("u-1", event().replace('"event_id"', '"event_id": "e-0", "event_id"', 1)),
    ("u-1", event().replace('"amount"', '"amount": 1, "amount"', 1)),
    ("u-1", event().replace('"amount":', '"amount" : 1, "amount":', 1)),
    ("u-1", event().replace('"amount":', '"amount"\n:1,"amount"\t:', 1)),
    ("u-1", event().replace('"user_id": "u-1"', '"user_id" : "u-1", "user_id":"u-1"', 1)),
    ("u-1", event(extra={"a": 1}).replace('"a": 1', '"a": 1, "a": 2')),
    # numbers the two parsers read differently, or not at all
    ("u-1", event(schema_version=1.0)),
    ("u-1", event().replace('"schema_version": 1', '"schema_version": 1e0')),
    ("u-1", event().replace('"schema_version": 1', '"schema_version": 10E-1')),
    ("u-1", event(props=p(quantity=2.0))),
    ("u-1", event(props=p(amount=10**30))),
    ("u-1", event(props=p(amount=5))),
    ("u-1", event(props=p(quantity=2**31 - 1))),
    ("u-1", event(props=p(quantity=2**31))),
    ("u-1", event(props=p(quantity=-0))),
    ("u-1", event().replace("19.99", "1e999")),
    ("u-1", event().replace("19.99", "-0.0")),
    ("u-1", event().replace("19.99", "NaN")),
    ("u-1", event().replace("19.99", "Infinity")),
    # strings
    ("u-1", event(user_id="u-\\u0031").replace("\\\\", "\\")),
    ("u-é", event(user_id="u-é")),
    ("u-1", event(props=p(session_id='a":b'))),
    ("u-1", event(props=p(session_id="a{b"))),
    ("u-1", event(props=p(session_id="x", query="red shoes"))),
    ("u-1", event(props=p(query="q\\u0022")).replace("\\\\", "\\")),
    ("u-1", event(props=p(currency="GB\\u0050")).replace("\\\\", "\\")),
    ("u-1", event().replace('"u-1"', '"u-1\\ud800"', 1)),
    ("u-1", event(event_id="e\x00")),
    # ids at and over MAX_ID_CHARS, with forbidden and allowed characters, written raw
    ("u-1", event(event_id="e" * 256)),
    ("u-1", event(event_id="e" * 257)),
    ("u" * 256, event(user_id="u" * 256)),
    # 254 characters, 258 UTF-16 units: the JVM doubts it, check_record accepts it
    ("u-1", event(event_id="e" * 250 + "😀" * 4).replace("\\ud83d\\ude00", "😀")),
    ("u-1", event(event_id="e-\u200f").replace("\\u200f", "\u200f")),
    ("u-1", event(event_id="e-\u2069").replace("\\u2069", "\u2069")),
    ("u-1", event(event_id="e-\u061c").replace("\\u061c", "\u061c")),
    ("u-1", event(event_id="e-\x7f").replace("\\u007f", "\x7f")),
    ("u-1", event(event_id="e-\u2070").replace("\\u2070", "\u2070")),
    # event times
    *[("u-1", event(event_time=f"2024-03-01T12:34:56.{'1' * n}Z")) for n in range(1, 10)],
    ("u-1", event(event_time="2024-03-01T12:34:56+05:30")),
    ("u-1", event(event_time="2024-03-01T12:34:56-00:00")),
    ("u-1", event(event_time="2024-03-01T24:00:00Z")),
    ("u-1", event(event_time="2024-12-31T23:59:60Z")),
    ("u-1", event(event_time="2024-02-29T00:00:00Z")),
    ("u-1", event(event_time="2023-02-29T00:00:00Z")),
    ("u-1", event(event_time="2024-03-01T12:34:56+24:00")),
    ("u-1", event(event_time="\uff12\uff10\uff12\uff14-03-01T12:34:56Z")),  # fullwidth digits
    ("u-1", event(event_time="2024-03-01T12:34:56.123z")),
    # structure
    ("u-1", event(props={})),
    ("u-1", event(props=None, event_type="page_view")),
    ("u-1", event(event_type="page_view").replace('"properties": {', '"properties": null, "x": {')),
    ("u-1", event(extra=[1, 2])),
    ("u-1", event(extra={"nested": {"deeper": True}})),
    ("u-1", "\ufeff" + event()),
    ("u-1", event() + event()),
    ("u-1", event() + " x"),
    ("u-1", event() + "\n"),
    ("u-1", b"\xef\xbb\xbf" + event().encode()),
    ("u-1", event().encode()[:-1]),
    ("u-1", event().replace(", ", ",").replace(": ", ":")),
    # what the JVM fast path reads its own way (Jackson, java.time, Java strings)
    ("u-1", " \ufeff" + event()),
    ("u-1", " \n\t" + event()),
    ("u-é", event(user_id="u-é").replace("\\u00e9", "é")),
    ("u-😀", event(user_id="u-😀").replace("\\ud83d\\ude00", "😀")),
    ("u-1", event(props=p(session_id="s-\u00e9")).replace("\\u00e9", "é")),
    ("u-1", event(props=p(session_id="s-X")).encode().replace(b"X", b"\xed\xa0\x80")),
    ("u-1", event(props=p(session_id="s-X")).encode().replace(b"X", b"\xc0\xaf")),
    ("u-1", event(props=p(session_id="s-X")).encode().replace(b"X", b"\xf4\x90\x80\x80")),
    ("u-1", event(event_time="2024-01-02T11:-6:14Z")),
    ("u-1", event(event_time="2024-1a-02T11:16:14Z")),
    ("u-1", event(event_time="0999-01-02T11:16:14Z")),
    ("u-1", event(event_time="2024-01-02T11:16:14+18:30")),
    ("u-1", event(event_time="2024-01-02T11:16:14-19:00")),
    ("u-1", event(event_time="2024-01-02T11:16:14+05:60")),
    ("u-1", event(event_time="2024-01-02T11:16:14.Z")),
    ("u-1", event(event_time="2024-01-02T11:16:14.1234567890Z")),
    ("u-1", event(event_time="2024-01-02 11:16:14Z")),
    ("u-1", event(props=p(quantity=2**40))),
    ("u-1", event(schema_version=2**40)),
    ("u-1", event(props=p(amount=0))),
    ("u-1", event().replace("19.99", "-0")),
    ("u-1", event().replace("19.99", "1E2")),
    ("u-1", event().replace("19.99", "0.1e-400")),
    ("u-1", event().replace("19.99", "9" * 30 + ".5")),
    ("u-1", event(props=p(device={}))),
    ("u-1", event(props=p(note=None, flag=True, n=1.5))),
    ("u-1", event(extra=None, other="x", flag=False)),
    ("u-1", event(props=[])),
    ("u-1", event(extra=[[[[[]]]]])),
]


def random_edits(seed: int = 11, copies: int = 20) -> list[tuple[bytes | None, bytes | None]]:
    """Simulated events with 1-3 random byte edits each (replace, insert, delete)."""
    rng = random.Random(seed)
    alphabet = b' "{}[]:,.-+0123456789eEtrufalsn\\\x00\xff\xc3u'
    edited: list[tuple[bytes | None, bytes | None]] = []
    for key, value in simulated(300) * copies:
        v = bytearray(value)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(v) + 1)
            op = rng.random()
            if op < 0.4 and i < len(v):
                v[i] = rng.choice(alphabet)
            elif op < 0.7:
                v.insert(i, rng.choice(alphabet))
            elif i < len(v):
                del v[i]
        edited.append((key, bytes(v)))
    return edited
