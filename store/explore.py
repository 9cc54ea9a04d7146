"""Read the feature store for people: what arrived, what was rejected, one user's days.

Notebook 01 (notebooks/01_events_and_features.ipynb) is built from these functions, so
what it shows is computed by tested code, not by cells. Each reader returns a small pandas
frame (aggregated in Spark first); each ``*_figure`` returns a matplotlib Figure built
without pyplot, like training/plots.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from features.registry import FEATURE_NAMES
from store.tables import FeatureStore


def _figure(
    width: float, height: float, ncols: int = 1, nrows: int = 1
) -> tuple[Figure, list[Axes]]:
    """A figure and its axes as a flat list, row by row."""
    fig = Figure(figsize=(width, height))
    return fig, list(fig.subplots(nrows, ncols, squeeze=False).flat)


def batches(spark: SparkSession, store: FeatureStore) -> pd.DataFrame:
    """One row per processed micro-batch (or backfill pass), oldest first."""
    cols = ["app_id", "batch_id", "records", "valid", "quarantined", "clock", "as_of"]
    frame = store.read(spark, "feature_batches").select(*cols, "users_updated", "processed_at")
    return frame.orderBy("processed_at").toPandas()


def reconciliation(spark: SparkSession, store: FeatureStore) -> dict[str, int]:
    """records seen by the batches = valid + quarantined, and the tables agree with both."""
    totals = store.read(spark, "feature_batches").agg(
        F.sum("records").alias("records"),
        F.sum("valid").alias("valid"),
        F.sum("quarantined").alias("quarantined"),
    )
    row = totals.first()
    assert row is not None
    return {
        "records": int(row["records"] or 0),
        "valid": int(row["valid"] or 0),
        "quarantined": int(row["quarantined"] or 0),
        "events_table_rows": store.read(spark, "events").count(),
        "quarantine_table_rows": store.read(spark, "quarantine").count(),
    }


def quarantine_reasons(spark: SparkSession, store: FeatureStore) -> pd.DataFrame:
    """reject_reason, records, first and last Kafka timestamp, most frequent first."""
    frame = (
        store.read(spark, "quarantine")
        .groupBy("reject_reason")
        .agg(
            F.count(F.lit(1)).alias("records"),
            F.min("kafka_timestamp").alias("first_seen"),
            F.max("kafka_timestamp").alias("last_seen"),
        )
        .orderBy(F.desc("records"), "reject_reason")
    )
    return frame.toPandas()


def arrivals(spark: SparkSession, store: FeatureStore) -> pd.DataFrame:
    """Valid events per event_date (rows) and event_type (columns), zeros filled."""
    counts: pd.DataFrame = (
        store.read(spark, "events").groupBy("event_date", "event_type").count().toPandas()
    )
    table = counts.pivot_table(
        index="event_date", columns="event_type", values="count", fill_value=0, aggfunc="sum"
    )
    table.index = pd.to_datetime(table.index)
    return table.sort_index().astype("int64")


def arrivals_figure(table: pd.DataFrame, top: int = 6) -> Figure:
    """Daily events of the `top` most frequent types, the rest summed as "other"."""
    order = table.sum().sort_values(ascending=False).index
    shown = table[order[:top]].copy()
    if len(order) > top:
        shown["other"] = table[order[top:]].sum(axis=1)
    fig, axes = _figure(10, 4)
    ax = axes[0]
    ax.stackplot(shown.index, shown.T.to_numpy(), labels=list(shown.columns))
    ax.set(xlabel="event date", ylabel="valid events per day", title="What arrived")
    ax.legend(loc="upper left", fontsize=8, ncols=2)
    fig.tight_layout()
    return fig


def features(
    spark: SparkSession, store: FeatureStore, names: Sequence[str] = FEATURE_NAMES
) -> pd.DataFrame:
    """user_features as pandas: user_id, as_of and the named features (float64)."""
    cols = [F.col(n).cast("double").alias(n) for n in names]
    return store.read(spark, "user_features").select("user_id", "as_of", *cols).toPandas()


def describe_features(frame: pd.DataFrame, names: Sequence[str] = FEATURE_NAMES) -> pd.DataFrame:
    """Per feature: share null, share zero, mean and quantiles (what a distribution looks like)."""
    x = frame[list(names)]
    out = pd.DataFrame(
        {
            "null_share": x.isna().mean(),
            "zero_share": (x == 0).mean(),
            "mean": x.mean(),
            "p50": x.quantile(0.5),
            "p90": x.quantile(0.9),
            "max": x.max(),
        }
    )
    out.index.name = "feature"
    return out


def histograms_figure(frame: pd.DataFrame, names: Sequence[str], bins: int = 30) -> Figure:
    """One histogram per feature (nulls left out, their share in the title)."""
    ncols = 3
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = _figure(11, 2.6 * nrows, ncols=ncols, nrows=nrows)
    for ax, name in zip(axes, names, strict=False):
        col = frame[name]
        ax.hist(col.dropna(), bins=bins, color="steelblue")
        ax.set_title(f"{name} (null {col.isna().mean():.0%})", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def typical_user(frame: pd.DataFrame, by: str = "n_events_90d") -> str:
    """The user at the median of `by` (ties: the smallest user_id): a representative timeline."""
    ranked = frame.sort_values([by, "user_id"], kind="stable").reset_index(drop=True)
    return str(ranked.loc[len(ranked) // 2, "user_id"])


def user_timeline(spark: SparkSession, store: FeatureStore, user_id: str) -> pd.DataFrame:
    """One user's rows of user_activity_daily, oldest first."""
    daily = store.read(spark, "user_activity_daily").where(F.col("user_id") == user_id)
    return daily.orderBy("activity_date").toPandas()


def user_events(
    spark: SparkSession, store: FeatureStore, user_id: str, limit: int = 20
) -> pd.DataFrame:
    """A user's latest `limit` events with where each came from in Kafka, newest first."""
    cols = ["event_time", "event_type", "amount", "device", "session_id", "product_id"]
    events = store.read(spark, "events").where(F.col("user_id") == user_id)
    kafka = ["source_partition", "source_offset"]
    return events.orderBy(F.desc("event_time")).select(*cols, *kafka).limit(limit).toPandas()


def timeline_figure(daily: pd.DataFrame, user_id: str) -> Figure:
    """Events and sessions per day, purchases as markers, support contacts as ticks."""
    fig, axes = _figure(10, 3.5)
    ax = axes[0]
    dates = pd.to_datetime(daily["activity_date"])
    if len(daily):  # the table holds active days only; show the quiet days as zeros
        full = pd.date_range(dates.min(), dates.max(), freq="D")
        cols = ["n_events", "n_session_start", "n_purchase", "n_support_contact"]
        daily = daily.set_index(dates)[cols].reindex(full, fill_value=0).reset_index(drop=True)
        dates = pd.Series(full)
    days = dates
    ax.bar(days, daily["n_events"], color="lightsteelblue", label="events")
    ax.plot(days, daily["n_session_start"], "o-", ms=3, color="navy", label="sessions")
    bought = daily["n_purchase"] > 0
    ax.scatter(
        days[bought], daily.loc[bought, "n_events"], color="green", zorder=3, label="purchase"
    )
    support = daily["n_support_contact"] > 0
    ax.scatter(
        days[support], np.zeros(int(support.sum())), marker="|", s=200, color="red", label="support"
    )
    ax.set(xlabel="activity date", ylabel="per day", title=f"Timeline of {user_id}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig
