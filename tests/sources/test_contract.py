"""The sources' contract checker agrees with the v1 examples it is meant to guard."""

from __future__ import annotations

import copy

import pytest

from sources.contract import contract_errors

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
        (("user_id",), _DELETE, "missing user_id"),
        (("event_type",), "login", "unknown event_type 'login'"),
        (("event_time",), "2024-03-01 12:34:56", "bad event_time '2024-03-01 12:34:56'"),
        (("schema_version",), 2, "schema_version must be 1"),
        (("properties", "amount"), _DELETE, "purchase requires amount"),
        (("properties", "amount"), -1.0, "amount must be >= 0"),
        (("properties", "quantity"), 2.5, "property quantity has type float"),
        (("properties", "quantity"), -1, "quantity must be >= 0"),
        (("properties", "device"), "tv", "unknown device 'tv'"),
        (("properties", "currency"), "gbp", "bad currency 'gbp'"),
    ],
)
def test_contract_violations_are_named(path: tuple[str, ...], value: object, error: str) -> None:
    assert contract_errors(_with(path, value)) == [error]
