"""The spine and the labels: who is scored at which cutoff, and whether they churned after it.

Day-granular reading of principle P5 (docs/decisions.md) (docs/training.md draws the timeline).
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

from pyspark.sql import DataFrame, SparkSession, Window
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


def days_before(
    spark: SparkSession, cutoffs: Sequence[date], days: int, name: str = "cutoff"
) -> DataFrame:
    """(activity_date, ``name``): each cutoff paired with each of the ``days`` days before it.

    A small table (cutoffs x days rows), built on the driver from the dates alone and joined
    by broadcast: a daily row meets only the cutoffs whose window holds it, so the work grows
    with the rows and the window, not with rows x cutoffs (docs/decisions.md, decision 37).
    """
    pairs = [(c - timedelta(days=n), c) for c in _cutoff_array(cutoffs) for n in range(1, days + 1)]
    return F.broadcast(spark.createDataFrame(pairs, f"activity_date date, {name} date"))


def spine(daily: DataFrame, cutoffs: Sequence[date], lookback_days: int) -> DataFrame:
    """(user_id, cutoff): every user with an active day in [cutoff - lookback_days, cutoff)."""
    window = days_before(daily.sparkSession, cutoffs, lookback_days)
    return (
        daily.where(F.col("n_events") > 0)
        .select(F.col("user_id"), F.col("activity_date"))
        .join(window, on="activity_date")
        .select(F.col("user_id"), F.col("cutoff"))
        .distinct()
    )


def label(daily: DataFrame, spine_rows: DataFrame, horizon_days: int) -> DataFrame:
    """(user_id, cutoff, churned): churned = 1 when the user has no active day in
    [cutoff, cutoff + horizon_days). The caller keeps only labelled cutoffs.

    Each user's active days and cutoffs in one sorted pass, newest first: a cutoff's running
    minimum is the user's first active day on or after it."""
    active = daily.where(F.col("n_events") > 0).select(
        F.col("user_id"),
        F.col("activity_date").alias("_day"),
        F.col("activity_date").alias("_active"),
        F.lit(1).alias("_kind"),
    )
    asked = spine_rows.select(
        F.col("user_id"),
        F.col("cutoff").alias("_day"),
        F.lit(None).cast("date").alias("_active"),
        F.lit(0).alias("_kind"),  # after the active day of its own date in this order
    )
    newest_first = (
        Window.partitionBy(F.col("user_id"))
        .orderBy(F.col("_day").desc(), F.col("_kind").desc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    nxt = F.min(F.col("_active")).over(newest_first)
    churned = nxt.isNull() | (nxt >= F.date_add(F.col("_day"), horizon_days))
    return (
        active.unionByName(asked)
        .select(F.col("user_id"), F.col("_day"), F.col("_kind"), churned.alias(LABEL))
        .where(F.col("_kind") == 0)
        .select(F.col("user_id"), F.col("_day").alias("cutoff"), F.col(LABEL).cast("int"))
    )
