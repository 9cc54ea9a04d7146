"""check_records (the batch validator Spark runs) gives check_record's verdicts and fields.

Its fast path is only a shortcut: on every input, valid or not, the result must be what the
contract's one validator says. The inputs: the contract's table of cases, simulated events,
hand-made near misses of a valid event, and seeded random byte edits of valid events.
"""

from __future__ import annotations

from features.validate import _plainly_valid, check_record, check_records
from tests.contract_cases import (
    BAD_INPUTS,
    MAX_BYTES,
    NEAR_MISSES,
    event,
    random_edits,
    raw,
    simulated,
)


def _assert_same_as_check_record(records: list[tuple[bytes | None, bytes | None]]) -> None:
    keys, values = [k for k, _ in records], [v for _, v in records]
    rows, reasons = check_records(keys, values, MAX_BYTES)
    for (key, value), row, reason in zip(records, rows, reasons, strict=True):
        fields, expected = check_record(key, value, MAX_BYTES)
        assert (row, reason) == (tuple(fields.values()), expected), (key, value)


def test_check_records_agrees_with_check_record_on_the_contract_cases() -> None:
    _assert_same_as_check_record([(raw(k), raw(v)) for k, v, _ in BAD_INPUTS])


def test_check_records_agrees_with_check_record_on_near_misses() -> None:
    _assert_same_as_check_record([(raw(k), raw(v)) for k, v in NEAR_MISSES])


def test_check_records_agrees_with_check_record_on_random_edits_of_valid_events() -> None:
    _assert_same_as_check_record(random_edits())


def test_an_amount_no_double_holds_is_invalid_not_a_crash() -> None:
    """Such a record once raised inside Spark's Python worker and failed the whole batch."""
    for amount in ("1" + "0" * 400, "1e999", "-1e999"):
        value = event().replace("19.99", amount).encode()
        assert check_record(b"u-1", value, 65536)[1] == "invalid_value:amount", amount
        assert check_records([b"u-1"], [value], 65536)[1] == ["invalid_value:amount"]


def test_simulated_events_take_the_fast_path_with_the_same_result() -> None:
    """The shortcut must serve the common case, else it is only a second code path."""
    records = simulated(2000)
    assert all(_plainly_valid(k, v, MAX_BYTES) is not None for k, v in records)
    _assert_same_as_check_record(records)
