"""Helpers for training tests: events -> the silver daily table, in memory or as Delta.

The daily table is built the way the feature stream builds it (features.aggregates.
daily_activity over valid events), from hand-written event rows or from the simulator.
Fixtures hand out the helpers (test modules are imported by path, not as a package).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession

from features.aggregates import daily_activity
from sources.simulator import SimulationConfig, simulate

EVENTS_SCHEMA = (
    "user_id string, event_type string, event_time timestamp, amount double, quantity int"
)


def at(day: date, hour: int = 12) -> datetime:
    """A UTC moment on `day`."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def events_frame(spark: SparkSession, rows: Iterable[tuple]) -> DataFrame:
    """(user_id, event_type, event_time, amount, quantity) rows -> an events DataFrame."""
    return spark.createDataFrame(list(rows), EVENTS_SCHEMA)


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Event-contract records (the simulator's, a replay's) as the columns daily_activity reads."""
    frame = pd.DataFrame.from_records(
        (
            (
                e["user_id"],
                e["event_type"],
                e["event_time"],
                e["properties"].get("amount"),
                e["properties"].get("quantity"),
            )
            for e in records
        ),
        columns=["user_id", "event_type", "event_time", "amount", "quantity"],
    )
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["quantity"] = frame["quantity"].astype("Int32")
    return frame


def split_rows(daily: DataFrame, t: Any) -> tuple[Any, dict[str, pd.DataFrame]]:
    """(CutoffSplit, {split: rows}) from a daily table and a TrainingConfig, as train() does."""
    from training.pipeline import collect_rows, data_range, plan_split
    from training.split import split_frame

    daily = daily.cache()
    try:
        first_day, data_end = data_range(daily)
        split = plan_split(first_day, data_end, t)
        rows = collect_rows(
            daily,
            sorted({*split.train, *split.valid, *split.test}),
            lookback_days=t.lookback_days,
            horizon_days=t.horizon_days,
        )
    finally:
        daily.unpersist()
    return split, split_frame(rows, split)


def daily_from_pandas(spark: SparkSession, events: pd.DataFrame) -> DataFrame:
    return daily_activity(spark.createDataFrame(events, EVENTS_SCHEMA))


@pytest.fixture(scope="session")
def make_daily(spark: SparkSession) -> Callable[[Iterable[tuple]], DataFrame]:
    """rows of (user_id, event_type, event_time, amount, quantity) -> the daily table."""
    return lambda rows: daily_activity(events_frame(spark, rows))


@pytest.fixture(scope="session")
def records_daily(spark: SparkSession) -> Callable[[Iterable[dict[str, Any]]], DataFrame]:
    """Event-contract records -> their daily table (not cached: the caller decides)."""
    return lambda records: daily_from_pandas(spark, records_frame(records))


@pytest.fixture(scope="session")
def simulated_daily(records_daily) -> Callable[[SimulationConfig], DataFrame]:
    """SimulationConfig -> its daily table (not cached: the caller decides)."""
    return lambda sim: records_daily(simulate(sim))


@pytest.fixture(scope="session")
def build_split(simulated_daily):
    """(SimulationConfig, TrainingConfig) -> (CutoffSplit, {split: rows}), as train() does."""
    return lambda sim, t: split_rows(simulated_daily(sim), t)


@pytest.fixture(scope="session")
def rows_from_daily():
    """(daily DataFrame, TrainingConfig) -> (CutoffSplit, {split: rows}), as train() does."""
    return split_rows


@pytest.fixture(scope="session")
def write_daily_table() -> Callable[[DataFrame, str], int]:
    """Write a daily DataFrame as the Delta table at a path, with the stream's extra
    first_batch_id column; returns the new Delta version."""

    def write(daily: DataFrame, path: str) -> int:
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        daily.withColumn("first_batch_id", F.lit(0).cast("long")).write.format("delta").mode(
            "append"
        ).save(path)
        spark = daily.sparkSession
        return int(DeltaTable.forPath(spark, path).history(1).collect()[0]["version"])

    return write
