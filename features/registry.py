"""The feature registry: one declarative list that generates the Spark expressions, the model's
feature schema (FEATURE_NAMES) and docs/features.md.

A feature reads window sums of daily columns (WindowSum, summed over [as_of - offset - days,
as_of - offset)), columns of the lifetime table, and the as_of date. Conventions, chosen so
that LightGBM sees "nothing happened" and "undefined" differently:
- counts and sums over a window with no activity are 0, never null;
- means and ratios with a zero denominator are null;
- recency of something never seen is null;
- trends are (current - previous) / (current + previous), in [-1, 1], 0 when both are 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Feature:
    """One model input. `expr(as_of)` builds it from window sums (by alias, nulls already 0),
    lifetime columns and the as_of date column; `window_sums` lists the sums it reads.
    Expressions are built lazily: no Column exists before a SparkSession does."""

    name: str
    description: str
    dtype: str
    window_days: int | None
    expr: Callable[[Column], Column] = field(repr=False, compare=False)
    window_sums: tuple[WindowSum, ...] = ()

    def column(self, as_of: Column) -> Column:
        return self.expr(as_of).cast(self.dtype).alias(self.name)


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator != 0, numerator / denominator)


def _window_sum(column: str, days: int, dtype: str, description: str, name: str = "") -> Feature:
    ws = WindowSum(column, days)
    return Feature(
        name=name or f"{column}_{days}d",
        description=description,
        dtype=dtype,
        window_days=days,
        expr=lambda _as_of: F.col(ws.alias),
        window_sums=(ws,),
    )


def _window_ratio(name: str, num: str, den: str, days: int, description: str) -> Feature:
    n, d = WindowSum(num, days), WindowSum(den, days)
    return Feature(
        name=name,
        description=description,
        dtype="double",
        window_days=days,
        expr=lambda _as_of: _ratio(F.col(n.alias), F.col(d.alias)),
        window_sums=(n, d),
    )


def _trend(column: str, days: int, what: str, label: str = "") -> Feature:
    cur, prev = WindowSum(column, days), WindowSum(column, days, offset_days=days)

    def expr(_as_of: Column) -> Column:
        c, p = F.col(cur.alias), F.col(prev.alias)
        return F.coalesce(_ratio(c - p, c + p), F.lit(0.0))

    return Feature(
        name=f"trend_{label or column}_{days}d",
        description=f"{what}: (last {days}d - previous {days}d) / (sum of both); 0 if both 0.",
        dtype="double",
        window_days=days,
        expr=expr,
        window_sums=(cur, prev),
    )


def _lifetime(name: str, dtype: str, description: str, expr: Callable[[], Column]) -> Feature:
    return Feature(name, description, dtype, None, lambda _as_of: expr())


def _days_since(name: str, date_column: str, description: str) -> Feature:
    return Feature(
        name, description, "int", None, lambda as_of: F.datediff(as_of, F.col(date_column))
    )


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
    col = F.col
    features += [
        _lifetime(
            "n_active_days_lifetime",
            "bigint",
            "Distinct active days.",
            lambda: col("n_active_days"),
        ),
        Feature(
            "active_day_ratio_lifetime",
            "Active days / tenure days; null when tenure is 0.",
            "double",
            None,
            lambda as_of: _ratio(col("n_active_days"), F.datediff(as_of, col("first_active_date"))),
        ),
        _lifetime("n_events_lifetime", "bigint", "Events of any type.", lambda: col("n_events")),
        _lifetime(
            "events_per_active_day_lifetime",
            "double",
            "Events per active day.",
            lambda: _ratio(col("n_events"), col("n_active_days")),
        ),
        _lifetime(
            "n_session_start_lifetime",
            "bigint",
            "session_start events.",
            lambda: col("n_session_start"),
        ),
        _lifetime(
            "events_per_session_lifetime",
            "double",
            "Events per session_start; null without sessions.",
            lambda: _ratio(col("n_events"), col("n_session_start")),
        ),
        _lifetime("n_purchase_lifetime", "bigint", "purchase events.", lambda: col("n_purchase")),
        _lifetime(
            "amount_purchase_lifetime", "double", "Purchase amount.", lambda: col("amount_purchase")
        ),
        _lifetime(
            "mean_purchase_amount_lifetime",
            "double",
            "Mean amount per purchase; null without purchases.",
            lambda: _ratio(col("amount_purchase"), col("n_purchase")),
        ),
        _lifetime(
            "n_items_purchased_lifetime",
            "bigint",
            "Items purchased.",
            lambda: col("n_items_purchased"),
        ),
        _lifetime("n_refund_lifetime", "bigint", "refund events.", lambda: col("n_refund")),
        _lifetime(
            "amount_refund_lifetime", "double", "Refunded amount.", lambda: col("amount_refund")
        ),
        _lifetime(
            "refund_amount_ratio_lifetime",
            "double",
            "Refunded / purchased amount; null without purchase amount.",
            lambda: _ratio(col("amount_refund"), col("amount_purchase")),
        ),
        _lifetime(
            "n_support_contact_lifetime",
            "bigint",
            "support_contact events.",
            lambda: col("n_support_contact"),
        ),
        _lifetime(
            "n_subscription_cancel_lifetime",
            "bigint",
            "subscription_cancel events.",
            lambda: col("n_subscription_cancel"),
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
