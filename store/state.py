"""The feature stream's hot state: what a micro-batch needs, held in the driver's memory.

Delta stays the durable copy of everything (docs/decisions.md, "hot state in memory"). When
a query starts, the state is loaded from the tables exactly as the last complete batch left
them (rows of a batch that died half-written are left out), so a replayed batch computes
the same result it did the first time. Then each batch updates it in place:

- ``daily``: per (user, day) aggregates for every day a feature reads or an accepted event
  can still touch (``daily_from`` on);
- ``lifetime``: per-user lifetime aggregates, every user;
- ``ids``: the event ids stored per event date, for every date an event can still be
  accepted on (``seen_from`` on): events older than that are too late, so never looked up.
  They are many (the event rate times the allowed lateness), so they live on local disk
  (store/id_index.py, decision 59), a cache of bronze that outlives the process.

Both frames merge by the add / min / max algebra of features.aggregates, driven by the same
column lists. Memory grows with the users and the lookback, not with the event rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from features.aggregates import (
    DAILY_ADD_COLUMNS,
    DAILY_KEY,
    DAILY_MAX_COLUMNS,
    DAILY_MIN_COLUMNS,
    LIFETIME_ADD_COLUMNS,
    LIFETIME_KEY,
    LIFETIME_MAX_COLUMNS,
    LIFETIME_MIN_COLUMNS,
    collapse_daily,
    lifetime_aggregates,
)
from features.compute import LOOKBACK_DAYS
from store.id_index import IdIndex
from store.tables import BATCH_COLUMNS, FeatureStore


def combine(
    frames: Sequence[pd.DataFrame], add: Sequence[str], low: Sequence[str], high: Sequence[str]
) -> pd.DataFrame:
    """Rows with the same index combined by add / min / max (nulls skipped, as in Spark)."""
    both = pd.concat(frames)
    if both.empty:
        return both
    by_key = both.groupby(level=list(range(both.index.nlevels)), sort=False)
    parts = [by_key[list(add)].sum()]
    if low:
        parts.append(by_key[list(low)].min())
    if high:
        parts.append(by_key[list(high)].max())
    return pd.concat(parts, axis=1)[list(both.columns)]


def nullable(schema: pa.Schema) -> pa.Schema:
    """Every field nullable: Delta tables created by a DataFrame write are."""
    return pa.schema([f.with_nullable(True) for f in schema])


def frame(table: pa.Table, key: Sequence[str]) -> pd.DataFrame:
    """An Arrow table as a state frame: key in the index, dates as datetime64 (so that
    min and max skip nulls)."""
    return table.to_pandas(date_as_object=False).set_index(list(key))


def batch_written(spark: SparkSession, store: FeatureStore, table: str, batch_id: int) -> bool:
    """True when the table holds rows of this batch (its append committed)."""
    if not store.exists(spark, table):
        return False
    rows = store.read_raw(spark, table).where(F.col(BATCH_COLUMNS[table]) == batch_id)
    return bool(rows.limit(1).count())


def batch_tables(row: dict[str, Any]) -> list[str]:
    """The tables a batch appends to, by its ``feature_batches`` counts."""
    tables = ["quarantine"] if row["quarantined"] else []
    tables += ["events", "user_activity_daily"] if row["valid"] else []
    return tables + (["user_features"] if row["users_updated"] else [])


def last_batch(spark: SparkSession, store: FeatureStore, app_id: str) -> dict[str, Any] | None:
    """This app's newest complete batch in ``feature_batches``, or None before its first.

    A batch appends its ``feature_batches`` row beside its other appends (docs/decisions.md,
    decision 34), so the newest row may be of a batch that died before all of them
    committed: it counts only when every table it wrote to holds rows of it, else the row
    before it does (batches run one at a time: only the newest can be incomplete)."""
    if not store.exists(spark, "feature_batches"):
        return None
    rows = (
        store.read(spark, "feature_batches")
        .where(F.col("app_id") == app_id)
        .orderBy(F.col("batch_id").desc())
        .limit(2)
        .toArrow()  # timestamps in UTC, whatever the host's time zone (collect() is local)
        .to_pylist()
    )
    if rows and not all(
        batch_written(spark, store, t, rows[0]["batch_id"]) for t in batch_tables(rows[0])
    ):
        rows = rows[1:]
    if not rows:
        return None
    row = rows[0]
    for key in ("clock", "watermark", "processed_at"):
        row[key] = naive_utc(row[key])
    row["partition_clocks"] = {k: naive_utc(v) for k, v in row["partition_clocks"] or []}
    return row


def naive_utc(moment: Any) -> datetime | None:
    """A timestamp as a naive datetime in UTC, the event-time clock's representation."""
    if moment is None or pd.isna(moment):
        return None
    return pd.Timestamp(moment).tz_convert(UTC).tz_localize(None).to_pydatetime()


def stored_ids(
    spark: SparkSession, store: FeatureStore, upto: int, days: Sequence[date]
) -> dict[date, set[str]]:
    """Event ids in bronze per event date, written by batches up to ``upto``, on ``days``."""
    if not days or not store.exists(spark, "events"):
        return {}
    rows = (
        store.read_raw(spark, "events")
        .where((F.col("ingest_batch_id") <= upto) & F.col("event_date").isin(list(days)))
        .select("event_date", "event_id")
        .toArrow()
        .to_pandas()
    )
    return {d: set(g) for d, g in rows.groupby("event_date")["event_id"]}


# Batches read from bronze at a time when the id index catches up (their ids pass through
# the driver's memory once).
FILL_BATCHES = 50


def fill_ids(
    spark: SparkSession, store: FeatureStore, index: IdIndex, upto: int, since: date | None
) -> None:
    """Bring the id index up to batch ``upto`` from bronze (dates from ``since`` on).

    An index behind the tables (a crash between a batch's appends and its ids, or a new
    index) gets the ids of the batches it lacks; one ahead of them (tables rebuilt or
    restored under a kept checkpoint) is emptied and filled again."""
    if index.upto is not None and index.upto > upto:
        index.clear()
    if index.upto != upto and store.exists(spark, "events"):
        ids = store.read_raw(spark, "events").where(F.col("ingest_batch_id") <= upto)
        if index.upto is not None:
            ids = ids.where(F.col("ingest_batch_id") > index.upto)
        if since is not None:
            ids = ids.where(F.col("event_date") >= F.lit(since))
        first, last = ids.agg(F.min("ingest_batch_id"), F.max("ingest_batch_id")).first()  # type: ignore[misc]
        for lo in range(first, last + 1, FILL_BATCHES) if first is not None else ():
            hi = min(lo + FILL_BATCHES - 1, upto)
            rows = (
                ids.where(F.col("ingest_batch_id").between(lo, hi))
                .select("event_date", "event_id")
                .toArrow()
                .to_pandas()
            )
            index.add(hi, {d: g.tolist() for d, g in rows.groupby("event_date")["event_id"]})
    index.add(upto, {})
    if since is not None:
        index.drop_before(since)


def horizons(
    as_of: date | None, watermark: datetime | None, allowed_lateness_s: int
) -> tuple[date | None, date | None]:
    """(daily_from, seen_from): the oldest day the state must hold (None: all of them)."""
    if watermark is None or as_of is None:
        return None, None
    seen_from = (watermark - timedelta(seconds=allowed_lateness_s)).date()
    return min(as_of - timedelta(days=LOOKBACK_DAYS), seen_from), seen_from


RECENT_BATCHES = 20


def recent_volumes(
    spark: SparkSession, store: FeatureStore, app_id: str, upto: int
) -> list[tuple[int, int]]:
    """(records, valid) of this app's last RECENT_BATCHES batches up to ``upto``, oldest
    first."""
    if upto < 0 or not store.exists(spark, "feature_batches"):
        return []
    rows = (
        store.read(spark, "feature_batches")
        .where(
            (F.col("app_id") == app_id) & F.col("batch_id").between(upto - RECENT_BATCHES + 1, upto)
        )
        .select("batch_id", "records", "valid")
        .collect()
    )
    return [(r["records"], r["valid"]) for r in sorted(rows, key=lambda r: r["batch_id"])]


@dataclass
class StreamState:
    """The hot state after the batch ``prev`` (None: before the first one)."""

    prev: dict[str, Any] | None
    daily: pd.DataFrame
    lifetime: pd.DataFrame
    ids: IdIndex
    daily_from: date | None
    seen_from: date | None
    # The recent complete batches' (records, valid), oldest first: the volume expectation's
    # reference (features.expectations).
    recent: list[tuple[int, int]] = field(default_factory=list)
    # The first batch after a load may have been written in part before a crash.
    may_be_replay: bool = True
    upto: int = field(init=False)
    # The ids of the batch being written: into ``ids`` once all of its appends committed.
    pending_ids: dict[date, set[str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.upto = self.prev["batch_id"] if self.prev else -1

    @classmethod
    def load(
        cls,
        spark: SparkSession,
        store: FeatureStore,
        app_id: str,
        allowed_lateness_s: int,
        ids_dir: Path | str | None = None,
    ) -> StreamState:
        """The state as of this app's last complete batch, from the Delta tables; the id
        index kept in ``ids_dir`` (None: a temporary one) and brought up to date."""
        prev = last_batch(spark, store, app_id)
        upto = prev["batch_id"] if prev else -1
        daily_from, seen_from = horizons(
            prev["as_of"] if prev else None, prev["watermark"] if prev else None, allowed_lateness_s
        )
        daily = lifetime = pd.DataFrame()
        if store.exists(spark, "user_activity_daily"):
            stored = collapse_daily(
                store.read_raw(spark, "user_activity_daily").where(F.col("batch_id") <= upto)
            )
            recent = stored
            if daily_from is not None:
                recent = stored.where(F.col("activity_date") >= F.lit(daily_from))
            daily_t, life_t = recent.toArrow(), lifetime_aggregates(stored).toArrow()
            daily, lifetime = frame(daily_t, DAILY_KEY), frame(life_t, LIFETIME_KEY)
        ids = IdIndex.open(ids_dir) if ids_dir is not None else IdIndex()
        fill_ids(spark, store, ids, upto, seen_from)
        return cls(
            prev,
            daily,
            lifetime,
            ids,
            daily_from,
            seen_from,
            recent_volumes(spark, store, app_id, upto),
        )

    def holds_day(self, day: pd.Timestamp) -> bool:
        return self.daily_from is None or day >= pd.Timestamp(self.daily_from)

    def holds_ids_of(self, day: date) -> bool:
        return self.seen_from is None or day >= self.seen_from

    def add_daily(self, partial: pd.DataFrame) -> None:
        """Add a batch's daily partials (index user_id, activity_date) in memory."""
        held = (
            self.daily.index.intersection(partial.index) if len(self.daily) else partial.index[:0]
        )
        merged = combine(
            [self.daily.loc[held], partial], DAILY_ADD_COLUMNS, DAILY_MIN_COLUMNS, DAILY_MAX_COLUMNS
        )
        self.daily = merged if self.daily.empty else _upsert(self.daily, merged)

    def add_lifetime(self, partial: pd.DataFrame) -> None:
        """Add a batch's lifetime partials (index user_id) in memory."""
        held = (
            self.lifetime.index.intersection(partial.index)
            if len(self.lifetime)
            else partial.index[:0]
        )
        merged = combine(
            [self.lifetime.loc[held], partial],
            LIFETIME_ADD_COLUMNS,
            LIFETIME_MIN_COLUMNS,
            LIFETIME_MAX_COLUMNS,
        )
        self.lifetime = merged if self.lifetime.empty else _upsert(self.lifetime, merged)

    def add_ids(self, ids_by_day: dict[date, set[str]]) -> None:
        """The batch's stored ids, held once the batch is complete (``advance``)."""
        self.pending_ids = {d: ids for d, ids in ids_by_day.items() if self.holds_ids_of(d)}

    def advance(self, prev: dict[str, Any], allowed_lateness_s: int) -> None:
        """The batch ``prev`` is complete: hold its ids, drop what no later batch can need."""
        self.ids.add(prev["batch_id"], self.pending_ids)
        self.pending_ids = {}
        self.prev, self.upto, self.may_be_replay = prev, prev["batch_id"], False
        self.recent = [*self.recent, (prev["records"], prev["valid"])][-RECENT_BATCHES:]
        self.daily_from, self.seen_from = horizons(
            prev["as_of"], prev["watermark"], allowed_lateness_s
        )
        if self.daily_from is not None and len(self.daily):
            days = self.daily.index.get_level_values("activity_date")
            self.daily = self.daily[days >= pd.Timestamp(self.daily_from)]
        if self.seen_from is not None:
            self.ids.drop_before(self.seen_from)


def _upsert(state: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``state`` with ``rows`` replacing the rows of the same key, and new keys added."""
    return pd.concat([state[~state.index.isin(rows.index)], rows])
