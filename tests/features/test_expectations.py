"""features.expectations: the checks the registry implies, each kind on hand-built input."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from features.expectations import (
    Expectations,
    InRange,
    InSet,
    NotNull,
    Volume,
    feature_expectations,
)
from features.registry import FEATURE_NAMES


def test_each_feature_gets_what_its_formula_guarantees():
    checks = {c.name: c for c in feature_expectations()}
    assert {n for n in FEATURE_NAMES if f"range:{n}" in checks} == set(FEATURE_NAMES)
    assert checks["range:trend_n_events_7d"] == InRange("trend_n_events_7d", -1, 1)
    assert "not_null:trend_n_events_7d" in checks and "not_null:n_events_7d" in checks
    assert checks["range:n_events_7d"] == InRange("n_events_7d", low=0)
    assert checks["range:days_since_last_event"] == InRange("days_since_last_event", low=1)
    # Recency and ratios may be null (never seen, zero denominator): no not-null check.
    assert "not_null:days_since_last_event" not in checks
    assert "not_null:events_per_session_7d" not in checks
    assert all(c.severity == "error" for c in checks.values())


def test_null_and_range_checks_count_the_rows_that_break_them():
    table = pa.table({"n": [0, 3, None, -1], "t": [-1.0, 1.0, 1.5, None]})
    assert NotNull("n").violations(table) == 1
    assert InRange("n", low=0).violations(table) == 1  # a null is not out of range
    assert InRange("t", -1, 1).violations(table) == 1


def test_event_types_outside_the_counted_set_are_counted():
    events = pd.DataFrame({"event_type": ["page_view", "purchase", "teleport", "teleport"]})
    assert InSet("event_type", frozenset({"page_view", "purchase"})).violations(events) == 2
    assert Expectations().check(None, events[:2], 2, 2, []) == {}


def test_the_valid_share_is_judged_against_the_recent_batches():
    v = Volume(max_drop=0.2, min_records=100)
    steady = [(1000, 950), (1000, 960), (50, 0), (1000, 940)]  # the small batch is ignored
    assert v.violations(1000, 700, steady) == 1  # 0.70 < 0.95 - 0.2
    assert v.violations(1000, 800, steady) == 0
    assert v.violations(99, 0, steady) == 0  # too small to judge
    assert v.violations(1000, 0, steady[:2]) == 0  # too little history


def test_what_stops_the_stream_follows_the_severity():
    checks = Expectations(
        features=(NotNull("n", severity="error"),),
        events=(InSet("event_type", frozenset({"a"})),),
        volume=None,
    )
    found = checks.check(pa.table({"n": [None]}), pd.DataFrame({"event_type": ["b"]}), 1, 1, [])
    assert found == {"not_null:n": 1, "in_set:event_type": 1}
    assert checks.stops(found, "never") == []
    assert checks.stops(found, "error") == ["not_null:n"]
    assert sorted(checks.stops(found, "warn")) == ["in_set:event_type", "not_null:n"]
    with pytest.raises(StopIteration):
        checks.severity("range:unknown")
