"""The sources' checker and the validator agree with the contract's one table of cases."""

from __future__ import annotations

import copy
import json

import pytest

from features.validate import check_record, parse_json_object
from sources.contract import contract_errors
from tests.contract_cases import BAD_INPUTS, MAX_BYTES

VALID = {
    "event_id": "e-123",
    "user_id": "u-42",
    "event_type": "purchase",
    "event_time": "2024-03-01T12:34:56.789Z",
    "schema_version": 1,
    "properties": {
        "amount": 19.99,
        "currency": "GBP",
        "quantity": 2,
        "device": "web",
        "session_id": "s-9",
        "product_id": "p-1",
    },
}


def _with(path: tuple[str, ...], value: object) -> dict:
    event = copy.deepcopy(VALID)
    target = event
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return event


_DELETE = object()


def test_contract_example_is_valid_and_unknown_properties_are_ignored() -> None:
    assert contract_errors(VALID) == []
    assert contract_errors(_with(("properties", "colour"), "red")) == []


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("user_id",), _DELETE, "null_key"),  # sent with its user id as the key: none
        (("event_type",), "login", "unknown_event_type"),
        (("event_time",), "2024-03-01 12:34:56", "invalid_value:event_time"),
        (("schema_version",), 2, "unknown_schema_version"),
        (("schema_version",), True, "wrong_type:schema_version"),  # JSON true is no 1
        (("properties", "amount"), _DELETE, "missing_field:amount"),
        (("properties", "amount"), -1.0, "invalid_value:amount"),
        (("properties", "quantity"), 2.5, "wrong_type:quantity"),
        (("properties", "quantity"), -1, "invalid_value:quantity"),
        (("properties", "device"), "tv", "invalid_value:device"),
        (("properties", "currency"), "gbp", "invalid_value:currency"),
    ],
)
def test_contract_violations_are_named(path: tuple[str, ...], value: object, error: str) -> None:
    assert contract_errors(_with(path, value)) == [error]


def _raw(x: bytes | str | None) -> bytes | None:
    return x.encode("utf-8") if isinstance(x, str) else x


def test_the_validator_gives_each_case_its_reason() -> None:
    got = [check_record(_raw(k), _raw(v), MAX_BYTES)[1] for k, v, _ in BAD_INPUTS]
    assert got == [reason for _, _, reason in BAD_INPUTS]


def test_the_sources_checker_gives_each_case_the_streams_reason() -> None:
    """Every case a source can produce (a JSON object, a text key) gets the same verdict."""
    checked = 0
    for key, value, reason in BAD_INPUTS:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if not isinstance(key, str | None) or text is None or parse_json_object(text) is None:
            continue
        assert contract_errors(json.loads(text), key, MAX_BYTES) == ([reason] if reason else []), (
            key,
            value,
        )
        checked += 1
    assert checked > 40
