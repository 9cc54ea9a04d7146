"""check_records (the batch validator Spark runs) gives check_record's verdicts and fields.

Its fast path is only a shortcut: on every input, valid or not, the result must be what the
contract's one validator says. The inputs: the contract's table of cases, simulated events,
hand-made near misses of a valid event, and seeded random byte edits of valid events.
"""

from __future__ import annotations

import itertools
import json
import random

from features.validate import _plainly_valid, check_record, check_records
from sources.simulator import SimulationConfig, simulate
from tests.contract_cases import BAD_INPUTS, MAX_BYTES, event, p


def _raw(x: bytes | str | None) -> bytes | None:
    return x.encode("utf-8") if isinstance(x, str) else x


def _assert_same_as_check_record(records: list[tuple[bytes | None, bytes | None]]) -> None:
    keys, values = [k for k, _ in records], [v for _, v in records]
    rows, reasons = check_records(keys, values, MAX_BYTES)
    for (key, value), row, reason in zip(records, rows, reasons, strict=True):
        fields, expected = check_record(key, value, MAX_BYTES)
        assert (row, reason) == (tuple(fields.values()), expected), (key, value)


def _simulated(n: int) -> list[tuple[bytes, bytes]]:
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
]


def test_check_records_agrees_with_check_record_on_the_contract_cases() -> None:
    _assert_same_as_check_record([(_raw(k), _raw(v)) for k, v, _ in BAD_INPUTS])


def test_check_records_agrees_with_check_record_on_near_misses() -> None:
    _assert_same_as_check_record([(_raw(k), _raw(v)) for k, v in NEAR_MISSES])


def test_check_records_agrees_with_check_record_on_random_edits_of_valid_events() -> None:
    rng = random.Random(11)
    alphabet = b' "{}[]:,.-+0123456789eEtrufalsn\\\x00\xff\xc3u'
    base = _simulated(300)
    edited: list[tuple[bytes | None, bytes | None]] = []
    for key, value in base * 20:
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
    _assert_same_as_check_record(edited)


def test_an_amount_no_double_holds_is_invalid_not_a_crash() -> None:
    """Such a record once raised inside Spark's Python worker and failed the whole batch."""
    for amount in ("1" + "0" * 400, "1e999", "-1e999"):
        value = event().replace("19.99", amount).encode()
        assert check_record(b"u-1", value, 65536)[1] == "invalid_value:amount", amount
        assert check_records([b"u-1"], [value], 65536)[1] == ["invalid_value:amount"]


def test_simulated_events_take_the_fast_path_with_the_same_result() -> None:
    """The shortcut must serve the common case, else it is only a second code path."""
    records = _simulated(2000)
    assert all(_plainly_valid(k, v, MAX_BYTES) is not None for k, v in records)
    _assert_same_as_check_record(records)
