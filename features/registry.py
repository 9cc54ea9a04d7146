"""The feature registry: one declarative list that generates the Spark expressions, the
stream's in-memory evaluation of the same formulas, the model's feature schema
(FEATURE_NAMES) and docs/features.md.

A feature reads window sums of daily columns (WindowSum, summed over [as_of - offset - days,
as_of - offset)), columns of the lifetime table, and the as_of date. Conventions, chosen so
that LightGBM sees "nothing happened" and "undefined" differently:
- counts and sums over a window with no activity are 0, never null;
- means and ratios with a zero denominator are null;
- recency of something never seen is null;
- trends are (current - previous) / (current + previous), in [-1, 1], 0 when both are 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

WINDOWS: tuple[int, ...] = (1, 7, 30, 90)
# Every event type has a count in the lifetime table; these get counts in every window.
WINDOW_COUNT_TYPES: tuple[str, ...] = (
    "session_start",
    "page_view",
    "search",
    "cart_add",
    "cart_remove",
    "checkout",
    "purchase",
    "support_contact",
)
# Rare types: only the long windows carry signal.
LONG_WINDOW_COUNT_TYPES: tuple[str, ...] = (
    "refund",
    "subscription_start",
    "subscription_change",
    "subscription_cancel",
)
LONG_WINDOWS: tuple[int, ...] = (30, 90)
ACTIVE_DAY = "active_day"  # 1 per daily row with events; compute.py adds it to daily


@dataclass(frozen=True)
class WindowSum:
    """Sum of a daily column over [as_of - offset_days - days, as_of - offset_days)."""

    column: str
    days: int
    offset_days: int = 0

    @property
    def alias(self) -> str:
        return f"_w_{self.column}_{self.offset_days}_{self.days}"

    @property
    def lookback_days(self) -> int:
        return self.days + self.offset_days


# A formula's value on the stream's in-memory frames: values, and where they are not null.
Values = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Inputs:
    """What a formula reads outside Spark: window sums by alias (0 where no activity), the
    lifetime columns (one row per user, dates as datetime64) and the as_of date."""

    sums: dict[str, np.ndarray]
    lifetime: pd.DataFrame
    as_of: np.datetime64


class Formula:
    """A feature's formula. One definition, two evaluations: ``spark`` builds the Column that
    backfills and training sets use, ``values`` computes the same on numpy arrays for the
    stream's hot state (docs/decisions.md, decision 38). Nulls follow Spark's rules."""

    def spark(self, as_of: Column) -> Column:
        raise NotImplementedError

    def values(self, inputs: Inputs) -> Values:
        raise NotImplementedError

    def window_sums(self) -> tuple[WindowSum, ...]:
        return ()


@dataclass(frozen=True)
class Sum(Formula):
    """A window sum (0 when the window has no activity)."""

    ws: WindowSum

    def spark(self, as_of: Column) -> Column:
        return F.col(self.ws.alias)

    def values(self, inputs: Inputs) -> Values:
        v = inputs.sums[self.ws.alias]
        return v, np.ones(len(v), dtype=bool)

    def window_sums(self) -> tuple[WindowSum, ...]:
        return (self.ws,)


@dataclass(frozen=True)
class Col(Formula):
    """A column of the lifetime table."""

    name: str

    def spark(self, as_of: Column) -> Column:
        return F.col(self.name)

    def values(self, inputs: Inputs) -> Values:
        s = inputs.lifetime[self.name]
        return s.to_numpy(na_value=0), s.notna().to_numpy()


@dataclass(frozen=True)
class DaysSince(Formula):
    """as_of minus a date column of the lifetime table, in days (null: no such date)."""

    name: str

    def spark(self, as_of: Column) -> Column:
        return F.datediff(as_of, F.col(self.name))

    def values(self, inputs: Inputs) -> Values:
        s = inputs.lifetime[self.name]
        valid = s.notna().to_numpy()
        dates = np.where(valid, s.to_numpy(dtype="datetime64[D]"), inputs.as_of)
        return (inputs.as_of - dates).astype("timedelta64[D]").astype(np.int32), valid


@dataclass(frozen=True)
class Ratio(Formula):
    """numerator / denominator as a double; null when the denominator is 0 or null."""

    numerator: Formula
    denominator: Formula

    def spark(self, as_of: Column) -> Column:
        return _ratio(self.numerator.spark(as_of), self.denominator.spark(as_of))

    def values(self, inputs: Inputs) -> Values:
        return _ratio_values(self.numerator.values(inputs), self.denominator.values(inputs))

    def window_sums(self) -> tuple[WindowSum, ...]:
        return self.numerator.window_sums() + self.denominator.window_sums()


@dataclass(frozen=True)
class Trend(Formula):
    """(current - previous) / (current + previous); 0 when both are 0."""

    current: WindowSum
    previous: WindowSum

    def spark(self, as_of: Column) -> Column:
        c, p = F.col(self.current.alias), F.col(self.previous.alias)
        return F.coalesce(_ratio(c - p, c + p), F.lit(0.0))

    def values(self, inputs: Inputs) -> Values:
        c, p = inputs.sums[self.current.alias], inputs.sums[self.previous.alias]
        everywhere = np.ones(len(c), dtype=bool)
        ratio, valid = _ratio_values((c - p, everywhere), (c + p, everywhere))
        return np.where(valid, ratio, 0.0), everywhere

    def window_sums(self) -> tuple[WindowSum, ...]:
        return (self.current, self.previous)


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator != 0, numerator / denominator)


def _ratio_values(numerator: Values, denominator: Values) -> Values:
    (n, n_ok), (d, d_ok) = numerator, denominator
    valid = n_ok & d_ok & (d != 0)
    out = np.zeros(len(n), dtype=np.float64)
    np.divide(n.astype(np.float64), d.astype(np.float64), out=out, where=valid)
    return out, valid


@dataclass(frozen=True)
class Feature:
    """One model input: a formula over window sums, lifetime columns and the as_of date,
    cast to ``dtype``."""

    name: str
    description: str
    dtype: str
    window_days: int | None
    formula: Formula = field(repr=False, compare=False)

    @property
    def window_sums(self) -> tuple[WindowSum, ...]:
        return self.formula.window_sums()

    def column(self, as_of: Column) -> Column:
        return self.formula.spark(as_of).cast(self.dtype).alias(self.name)


def _window_sum(column: str, days: int, dtype: str, description: str, name: str = "") -> Feature:
    return Feature(
        name=name or f"{column}_{days}d",
        description=description,
        dtype=dtype,
        window_days=days,
        formula=Sum(WindowSum(column, days)),
    )


def _window_ratio(name: str, num: str, den: str, days: int, description: str) -> Feature:
    return Feature(
        name=name,
        description=description,
        dtype="double",
        window_days=days,
        formula=Ratio(Sum(WindowSum(num, days)), Sum(WindowSum(den, days))),
    )


def _trend(column: str, days: int, what: str, label: str = "") -> Feature:
    return Feature(
        name=f"trend_{label or column}_{days}d",
        description=f"{what}: (last {days}d - previous {days}d) / (sum of both); 0 if both 0.",
        dtype="double",
        window_days=days,
        formula=Trend(WindowSum(column, days), WindowSum(column, days, offset_days=days)),
    )


def _lifetime(name: str, dtype: str, description: str, formula: Formula) -> Feature:
    return Feature(name, description, dtype, None, formula)


def _days_since(name: str, date_column: str, description: str) -> Feature:
    return Feature(name, description, "int", None, DaysSince(date_column))


def _build() -> tuple[Feature, ...]:
    features: list[Feature] = []
    for days in WINDOWS:
        features.append(
            _window_sum("n_events", days, "bigint", f"Events of any type in the last {days}d.")
        )
    for event_type in WINDOW_COUNT_TYPES:
        for days in WINDOWS:
            features.append(
                _window_sum(
                    f"n_{event_type}", days, "bigint", f"{event_type} events in the last {days}d."
                )
            )
    for event_type in LONG_WINDOW_COUNT_TYPES:
        for days in LONG_WINDOWS:
            features.append(
                _window_sum(
                    f"n_{event_type}", days, "bigint", f"{event_type} events in the last {days}d."
                )
            )
    for days in WINDOWS[1:]:
        features.append(
            _window_sum(
                ACTIVE_DAY,
                days,
                "bigint",
                f"Distinct days with any event in the last {days}d.",
                name=f"active_days_{days}d",
            )
        )
    for days in WINDOWS[1:]:
        features.append(
            _window_sum("amount_purchase", days, "double", f"Purchase amount, last {days}d.")
        )
    for days in LONG_WINDOWS:
        features += [
            _window_ratio(
                f"mean_purchase_amount_{days}d",
                "amount_purchase",
                "n_purchase",
                days,
                f"Mean amount per purchase, last {days}d; null without purchases.",
            ),
            _window_sum(
                "n_items_purchased", days, "bigint", f"Items purchased in the last {days}d."
            ),
            _window_sum("amount_refund", days, "double", f"Refunded amount, last {days}d."),
        ]
    features.append(
        _window_ratio(
            "refund_amount_ratio_90d",
            "amount_refund",
            "amount_purchase",
            90,
            "Refunded / purchased amount, last 90d; null without purchase amount.",
        )
    )
    for days in WINDOWS[1:]:
        features.append(
            _window_ratio(
                f"events_per_session_{days}d",
                "n_events",
                "n_session_start",
                days,
                f"Events per session_start, last {days}d; null without sessions.",
            )
        )
    features += [
        _trend("n_events", 7, "Event count trend"),
        _trend("n_events", 30, "Event count trend"),
        _trend(ACTIVE_DAY, 30, "Active days trend", label="active_days"),
        _trend("n_session_start", 7, "Session count trend"),
        _trend("n_session_start", 30, "Session count trend"),
        _trend("amount_purchase", 30, "Purchase amount trend"),
        _days_since(
            "days_since_last_event",
            "last_active_date",
            "as_of - last active date, in days (active yesterday = 1).",
        ),
        _days_since(
            "days_since_last_purchase",
            "last_purchase_date",
            "as_of - last day with a purchase, in days; null if never.",
        ),
        _days_since(
            "days_since_last_session",
            "last_session_date",
            "as_of - last day with a session_start, in days; null if never.",
        ),
        _days_since("tenure_days", "first_active_date", "as_of - first active date, in days."),
    ]
    features += [
        _lifetime(
            "n_active_days_lifetime",
            "bigint",
            "Distinct active days.",
            Col("n_active_days"),
        ),
        Feature(
            "active_day_ratio_lifetime",
            "Active days / tenure days; null when tenure is 0.",
            "double",
            None,
            Ratio(Col("n_active_days"), DaysSince("first_active_date")),
        ),
        _lifetime("n_events_lifetime", "bigint", "Events of any type.", Col("n_events")),
        _lifetime(
            "events_per_active_day_lifetime",
            "double",
            "Events per active day.",
            Ratio(Col("n_events"), Col("n_active_days")),
        ),
        _lifetime(
            "n_session_start_lifetime",
            "bigint",
            "session_start events.",
            Col("n_session_start"),
        ),
        _lifetime(
            "events_per_session_lifetime",
            "double",
            "Events per session_start; null without sessions.",
            Ratio(Col("n_events"), Col("n_session_start")),
        ),
        _lifetime("n_purchase_lifetime", "bigint", "purchase events.", Col("n_purchase")),
        _lifetime("amount_purchase_lifetime", "double", "Purchase amount.", Col("amount_purchase")),
        _lifetime(
            "mean_purchase_amount_lifetime",
            "double",
            "Mean amount per purchase; null without purchases.",
            Ratio(Col("amount_purchase"), Col("n_purchase")),
        ),
        _lifetime(
            "n_items_purchased_lifetime",
            "bigint",
            "Items purchased.",
            Col("n_items_purchased"),
        ),
        _lifetime("n_refund_lifetime", "bigint", "refund events.", Col("n_refund")),
        _lifetime("amount_refund_lifetime", "double", "Refunded amount.", Col("amount_refund")),
        _lifetime(
            "refund_amount_ratio_lifetime",
            "double",
            "Refunded / purchased amount; null without purchase amount.",
            Ratio(Col("amount_refund"), Col("amount_purchase")),
        ),
        _lifetime(
            "n_support_contact_lifetime",
            "bigint",
            "support_contact events.",
            Col("n_support_contact"),
        ),
        _lifetime(
            "n_subscription_cancel_lifetime",
            "bigint",
            "subscription_cancel events.",
            Col("n_subscription_cancel"),
        ),
    ]
    names = [f.name for f in features]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"duplicate feature names in registry: {duplicated}")
    return tuple(features)


FEATURES: tuple[Feature, ...] = _build()
FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
FEATURE_DTYPES: dict[str, str] = {f.name: f.dtype for f in FEATURES}
