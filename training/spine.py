"""The spine and the labels: who is scored at which cutoff, and whether they churned after it.

Day-granular reading of ARCHITECTURE.md decision 5 (docs/training.md draws the timeline).
A cutoff C is a date: the moment 00:00 UTC that starts day C.

- eligible at C: at least one active day in [C - lookback, C);
- features at C: daily rows with activity_date < C (features.compute);
- churned at C: no active day in [C, C + horizon), the day-granular "(C, C + horizon]";
- C is labelled only when its horizon has fully elapsed: C + horizon <= data_end, where
  data_end = last activity_date in the table + 1 day.

The date arithmetic is plain Python; the Spark functions are pure DataFrame transforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

LABEL = "churned"
SPINE_KEY: tuple[str, ...] = ("user_id", "cutoff")


def is_labelled(cutoff: date, data_end: date, horizon_days: int) -> bool:
    """True when the whole label window [cutoff, cutoff + horizon) lies before data_end."""
    return cutoff + timedelta(days=horizon_days) <= data_end


def scheduled_cutoffs(
    first_day: date,
    data_end: date,
    *,
    horizon_days: int,
    step_days: int,
    min_history_days: int = 0,
    max_cutoffs: int | None = None,
) -> list[date]:
    """Labelled cutoffs every step_days, counted back from the latest labelled one.

    The latest is data_end - horizon, so the test cutoff is as recent as the data allows;
    the earliest is first_day + min_history_days. Sorted ascending; max_cutoffs keeps the
    latest N.
    """
    if step_days < 1 or horizon_days < 1:
        raise ValueError("step_days and horizon_days must be >= 1")
    earliest = first_day + timedelta(days=min_history_days)
    cutoffs: list[date] = []
    cutoff = data_end - timedelta(days=horizon_days)
    while cutoff >= earliest:
        cutoffs.append(cutoff)
        cutoff -= timedelta(days=step_days)
    cutoffs.reverse()
    return cutoffs[-max_cutoffs:] if max_cutoffs else cutoffs


def check_explicit_cutoffs(
    cutoffs: Sequence[date], data_end: date, horizon_days: int
) -> list[date]:
    """Sorted, de-duplicated explicit cutoffs; fails naming any whose horizon has not elapsed."""
    open_ = sorted(c for c in set(cutoffs) if not is_labelled(c, data_end, horizon_days))
    if open_:
        raise ValueError(
            f"cutoffs {', '.join(map(str, open_))}: their {horizon_days}-day label window "
            f"does not end by {data_end} (last day in the table + 1), so they cannot be labelled"
        )
    return sorted(set(cutoffs))


def _cutoff_array(cutoffs: Sequence[date]) -> list[date]:
    if not cutoffs:
        raise ValueError("no cutoffs")
    return sorted(set(cutoffs))


def spine(daily: DataFrame, cutoffs: Sequence[date], lookback_days: int) -> DataFrame:
    """(user_id, cutoff): every user with an active day in [cutoff - lookback_days, cutoff)."""
    days = _cutoff_array(cutoffs)
    day, cutoff = F.col("activity_date"), F.col("cutoff")
    first = days[0] - timedelta(days=lookback_days)
    return (
        daily.where((F.col("n_events") > 0) & (day >= F.lit(first)) & (day < F.lit(days[-1])))
        .select(
            F.col("user_id"),
            day,
            F.explode(F.array(*[F.lit(c) for c in days])).alias("cutoff"),
        )
        .where((day < cutoff) & (day >= F.date_sub(cutoff, lookback_days)))
        .select(F.col("user_id"), F.col("cutoff"))
        .distinct()
    )


def label(daily: DataFrame, spine_rows: DataFrame, horizon_days: int) -> DataFrame:
    """(user_id, cutoff, churned): churned = 1 when the user has no active day in
    [cutoff, cutoff + horizon_days). The caller keeps only labelled cutoffs."""
    s = spine_rows.alias("s")
    d = (
        daily.where(F.col("n_events") > 0)
        .select(F.col("user_id"), F.col("activity_date"))
        .alias("d")
    )
    after = (
        (F.col("d.user_id") == F.col("s.user_id"))
        & (F.col("d.activity_date") >= F.col("s.cutoff"))
        & (F.col("d.activity_date") < F.date_add(F.col("s.cutoff"), horizon_days))
    )
    return (
        s.join(d, on=after, how="left")
        .groupBy(F.col("s.user_id").alias("user_id"), F.col("s.cutoff").alias("cutoff"))
        .agg(F.count(F.col("d.activity_date")).alias("active_days_after"))
        .select(
            F.col("user_id"),
            F.col("cutoff"),
            (F.col("active_days_after") == 0).cast("int").alias(LABEL),
        )
    )
