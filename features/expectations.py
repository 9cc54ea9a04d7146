"""Data-quality expectations on the feature vectors and the batches, beside the registry.

Checked by the feature stream on every micro-batch (store.ingest), counted in the batch's
``feature_batches`` row (``dq_violations``, check name -> rows or batches that broke it)
and in the metrics (``churn_dq_violations_total``); never dropped. A violation of a
severity at or above ``stream_features.dq_stop_on`` stops the stream before the batch's
features are written (docs/features.md, "Data quality"; docs/decisions.md, decision 69).

Four kinds:

- ``not_null``: a feature the registry defines as never null (window counts and sums,
  trends) has no null;
- ``range``: a feature stays within the bounds its formula allows (counts, sums and
  ratios >= 0, since amounts and quantities are validated non-negative; trends in
  [-1, 1]; recency >= 1 day);
- ``in_set``: the batch's valid events are of the types the features count;
- ``volume``: the batch's share of valid records has not fallen more than
  ``max_drop`` below the median share of the recent batches (batches of at least
  ``min_records``).

Feature checks come from the registry's formulas (:func:`feature_expectations`), so a new
feature gets them without a new line here. Severity ``error`` marks what only a bug or a
corrupt state can cause (the formulas cannot produce it); ``warn`` marks what the data
can (an upstream change).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import EVENT_TYPES
from features.registry import (
    FEATURES,
    LONG_WINDOW_COUNT_TYPES,
    WINDOW_COUNT_TYPES,
    Col,
    DaysSince,
    Ratio,
    Sum,
    Trend,
)

Severity = Literal["warn", "error"]
SEVERITIES: tuple[Severity, ...] = ("warn", "error")


@dataclass(frozen=True)
class NotNull:
    column: str
    severity: Severity = "error"

    @property
    def name(self) -> str:
        return f"not_null:{self.column}"

    def violations(self, features: pa.Table) -> int:
        return int(features.column(self.column).null_count)


@dataclass(frozen=True)
class InRange:
    column: str
    low: float | None = None
    high: float | None = None
    severity: Severity = "error"

    @property
    def name(self) -> str:
        return f"range:{self.column}"

    def violations(self, features: pa.Table) -> int:
        values = features.column(self.column)
        bad = 0
        if self.low is not None:
            bad += int(pc.sum(pc.less(values, self.low)).as_py() or 0)
        if self.high is not None:
            bad += int(pc.sum(pc.greater(values, self.high)).as_py() or 0)
        return bad


@dataclass(frozen=True)
class InSet:
    """The batch's valid events have a value of ``column`` in ``allowed``."""

    column: str
    allowed: frozenset[str]
    severity: Severity = "warn"

    @property
    def name(self) -> str:
        return f"in_set:{self.column}"

    def violations(self, events: pd.DataFrame) -> int:
        return int((~events[self.column].isin(self.allowed)).sum())


@dataclass(frozen=True)
class Volume:
    """The valid share of a batch against the recent batches' median share."""

    max_drop: float = 0.2
    min_records: int = 100
    recent: int = 20
    severity: Severity = "warn"

    @property
    def name(self) -> str:
        return "volume:valid_share"

    def violations(self, records: int, valid: int, history: Sequence[tuple[int, int]]) -> int:
        """1 when this batch (``records``, ``valid``) breaks the rule against ``history``
        (the recent batches' (records, valid), oldest first), else 0."""
        shares = [v / n for n, v in history[-self.recent :] if n >= self.min_records]
        if records < self.min_records or len(shares) < 3:
            return 0
        return int(valid / records < float(np.median(shares)) - self.max_drop)


def feature_expectations() -> tuple[NotNull | InRange, ...]:
    """What each feature's formula guarantees, as checks."""
    out: list[NotNull | InRange] = []
    for f in FEATURES:
        formula = f.formula
        if isinstance(formula, Sum):  # window counts and sums: 0 without activity
            out += [NotNull(f.name), InRange(f.name, low=0)]
        elif isinstance(formula, Trend):
            out += [NotNull(f.name), InRange(f.name, low=-1, high=1)]
        elif isinstance(formula, Col | Ratio):  # lifetime counts and sums, ratios of them
            out.append(InRange(f.name, low=0))
        elif isinstance(formula, DaysSince):  # of days before as_of
            out.append(InRange(f.name, low=1))
    return tuple(out)


# The event types the registry's features count (lifetime counts cover every type).
COUNTED_TYPES = frozenset(WINDOW_COUNT_TYPES) | frozenset(LONG_WINDOW_COUNT_TYPES)


@dataclass(frozen=True)
class Expectations:
    """Every check the stream runs on a batch."""

    features: tuple[NotNull | InRange, ...] = feature_expectations()
    events: tuple[InSet, ...] = (InSet("event_type", COUNTED_TYPES | frozenset(EVENT_TYPES)),)
    volume: Volume | None = Volume()

    def severity(self, name: str) -> Severity:
        checks = [*self.features, *self.events, *([self.volume] if self.volume else [])]
        return next(c.severity for c in checks if c.name == name)

    def check(
        self,
        features: pa.Table | None,
        events: pd.DataFrame,
        records: int,
        valid: int,
        history: Sequence[tuple[int, int]],
    ) -> dict[str, int]:
        """Violations of this batch by check name (only the checks that found some)."""
        found: dict[str, int] = {}
        if features is not None and features.num_rows:
            for f in self.features:
                found[f.name] = found.get(f.name, 0) + f.violations(features)
        if len(events):
            for e in self.events:
                found[e.name] = e.violations(events)
        if self.volume is not None:
            found[self.volume.name] = self.volume.violations(records, valid, history)
        return {k: v for k, v in found.items() if v}

    def stops(
        self, violations: dict[str, int], stop_on: Literal["never", "warn", "error"]
    ) -> list[str]:
        """The violated checks whose severity is at or above ``stop_on`` (never: none)."""
        if stop_on == "never":
            return []
        floor = SEVERITIES.index(stop_on)
        return [n for n in violations if SEVERITIES.index(self.severity(n)) >= floor]
