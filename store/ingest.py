"""Update the feature store from one batch of Kafka records: the step both drivers share.

The streaming job calls :func:`process_batch` inside ``foreachBatch``; the backfill calls
:func:`rebuild` on bounded data. Both use the same pure functions from ``features/``.

One batch, in order (each write idempotent per (app_id, batch_id), see store/tables.py):

1. parse and validate; reject future events (per record), late events (behind the
   watermark minus the allowed lateness) and duplicates (in the batch, or already in
   ``events`` on the same event date). The watermark is the slowest Kafka partition's
   newest event time, so a replay whose partitions move through event time at different
   speeds rejects nothing that live traffic would accept;
2. rejected records -> ``quarantine`` (raw bytes, reason, Kafka coordinates);
3. valid events -> ``events`` (bronze, partitioned by event_date);
4. their per-user daily partial counts MERGE-added into ``user_activity_daily``;
5. lifetime partials MERGE-added into ``user_lifetime`` (a day counts as a new active day
   only in the batch that created its daily row);
6. features as of the clock's next midnight recomputed into ``user_features`` for the users
   the batch touched, or for every user when the as-of date moved (silence is a signal:
   recency must grow for users who send nothing);
7. one row in ``feature_batches``: counts per reason, the clock (newest event time
   accepted), each partition's newest event time, the watermark, the as-of date. It is
   written last, so a batch found there is complete and is skipped if replayed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.aggregates import (
    DAILY_ADD_COLUMNS,
    DAILY_COLUMNS,
    DAILY_KEY,
    DAILY_MAX_COLUMNS,
    DAILY_MIN_COLUMNS,
    LIFETIME_ADD_COLUMNS,
    LIFETIME_COLUMNS,
    LIFETIME_KEY,
    LIFETIME_MAX_COLUMNS,
    LIFETIME_MIN_COLUMNS,
    daily_activity,
    lifetime_aggregates,
)
from features.compute import compute_features
from features.events import (
    apply_time_rules,
    mark_duplicates,
    mark_seen,
    parse_events,
    rejected_events,
    utc_date,
    valid_events,
)
from features.registry import FEATURES
from infra.timing import StepTimes
from store.tables import (
    FeatureStore,
    Txn,
    additive_update_set,
    append,
    ensure_table,
    merge,
    overwrite,
)

CDF = {"delta.enableChangeDataFeed": "true"}
# The longest window any feature reads (a 30-day trend reads 60 days, a 90-day window 90).
LOOKBACK_DAYS = max(ws.lookback_days for f in FEATURES for ws in f.window_sums)
BATCHES_SCHEMA = (
    "app_id string, batch_id long, records long, valid long, quarantined long, "
    "reasons map<string,long>, clock timestamp, watermark timestamp, "
    "partition_clocks map<string,timestamp>, as_of date, users_updated long, "
    "refreshed_all boolean, processed_at timestamp"
)


@dataclass(frozen=True)
class IngestRules:
    """Validation limits and event-time rules (plain values; the job reads them from config)."""

    max_value_bytes: int = 65536
    max_future_skew_s: int = 3600
    allowed_lateness_s: int = 3 * 86400


@dataclass
class BatchResult(StepTimes):
    batch_id: int
    records: int = 0
    valid: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    clock: datetime | None = None
    watermark: datetime | None = None
    partition_clocks: dict[str, datetime] = field(default_factory=dict)
    as_of: date | None = None
    users_updated: int = 0
    refreshed_all: bool = False
    seconds: float = 0.0
    skipped: bool = False

    def line(self) -> str:
        """One progress line for logs."""
        if self.skipped:
            return f"batch {self.batch_id}: already committed, skipped"
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items())) or "none"
        scope = "users (all: as-of moved)" if self.refreshed_all else "touched users"
        return (
            f"batch {self.batch_id}: {self.records:,} records -> {self.valid:,} valid, "
            f"{self.quarantined:,} quarantined ({reasons}); clock {self.clock}, "
            f"watermark {self.watermark}, "
            f"as_of {self.as_of}; features for {self.users_updated:,} {scope}; "
            f"{self.seconds:.1f}s ({self.steps_text()})"
        )


def last_batch(spark: SparkSession, store: FeatureStore, app_id: str) -> dict | None:
    """The newest ``feature_batches`` row of this app, or None before its first batch."""
    if not store.exists(spark, "feature_batches"):
        return None
    rows = (
        store.read(spark, "feature_batches")
        .where(F.col("app_id") == app_id)
        .orderBy(F.col("batch_id").desc())
        .limit(1)
        .collect()
    )
    return rows[0].asDict() if rows else None


def as_of_for(clock: datetime) -> date:
    """Features as of the midnight after the clock: they include the clock's own (partial) day."""
    return (clock.astimezone(UTC).date() if clock.tzinfo else clock.date()) + timedelta(days=1)


def _stored_ids(
    spark: SparkSession, store: FeatureStore, dates: list[date], batch_id: int
) -> DataFrame:
    """Event ids already in bronze on these event dates, written by earlier batches."""
    if not dates or not store.exists(spark, "events"):
        return spark.createDataFrame([], "event_id string")
    return (
        store.read(spark, "events")
        .where(F.col("event_date").isin(dates) & (F.col("ingest_batch_id") != batch_id))
        .select(F.col("event_id"))
    )


def process_batch(
    spark: SparkSession,
    store: FeatureStore,
    raw: DataFrame,
    batch_id: int,
    rules: IngestRules,
    app_id: str,
    on_rejects: Callable[[DataFrame], None] | None = None,
) -> BatchResult:
    """Apply one micro-batch of Kafka records to every feature-store table, idempotently.

    ``on_rejects`` receives the batch's rejected records (raw bytes, reason, Kafka
    coordinates) before they are quarantined, e.g. to send them to the dead-letter topic.
    """
    t0 = t = time.monotonic()
    r = BatchResult(batch_id=batch_id)
    prev = last_batch(spark, store, app_id)
    if prev is not None and prev["batch_id"] >= batch_id:
        r.skipped = True
        return r
    txn = Txn(app_id, batch_id)
    watermark: datetime | None = prev["watermark"] if prev else None
    min_time = watermark - timedelta(seconds=rules.allowed_lateness_s) if watermark else None

    parsed = apply_time_rules(
        parse_events(raw, max_value_bytes=rules.max_value_bytes),
        min_event_time=min_time,
        max_skew_after_record_s=rules.max_future_skew_s,
    )
    parsed = mark_duplicates(parsed).persist()
    dates = [
        row["d"]
        for row in parsed.where(F.col("reject_reason").isNull())
        .select(utc_date(F.col("event_time")).alias("d"))
        .distinct()
        .collect()
    ]
    checked = mark_seen(parsed, _stored_ids(spark, store, dates, batch_id)).persist()
    summary = (
        checked.groupBy(F.col("reject_reason"), F.col("source_topic"), F.col("source_partition"))
        .agg(F.count(F.lit(1)).alias("n"), F.max(F.col("event_time")).alias("t"))
        .collect()
    )
    parsed.unpersist()
    for row in summary:
        if row["reject_reason"]:
            r.reasons[row["reject_reason"]] = r.reasons.get(row["reject_reason"], 0) + row["n"]
    r.valid = sum(row["n"] for row in summary if row["reject_reason"] is None)
    r.quarantined = sum(r.reasons.values())
    r.records = r.valid + r.quarantined
    r.partition_clocks = dict(prev["partition_clocks"] or {}) if prev else {}
    for row in summary:
        if row["reject_reason"] is None and row["t"] is not None:
            key = f"{row['source_topic']}/{row['source_partition']}"
            r.partition_clocks[key] = max(row["t"], r.partition_clocks.get(key, row["t"]))
    r.clock = max(r.partition_clocks.values(), default=None)
    r.watermark = min(r.partition_clocks.values(), default=None)
    t = r.step("validate", t)

    if r.quarantined:
        rejects = rejected_events(checked).select(
            F.col("*"), F.lit(batch_id).cast("long").alias("batch_id")
        )
        if on_rejects is not None:
            on_rejects(rejects)
            t = r.step("dead_letter_topic", t)
        append(rejects, store.path("quarantine"), txn)
        t = r.step("quarantine", t)
    if r.valid:
        valid = valid_events(checked)
        bronze = valid.select(
            F.col("*"),
            utc_date(F.col("event_time")).alias("event_date"),
            F.lit(batch_id).cast("long").alias("ingest_batch_id"),
        )
        append(bronze, store.path("events"), txn, partition_by=["event_date"])
        t = r.step("events", t)
        _merge_aggregates(spark, store, valid, batch_id, txn)
        t = r.step("daily_and_lifetime", t)

    if r.clock is not None:
        r.as_of = as_of_for(r.clock)
        r.refreshed_all = prev is None or prev["as_of"] != r.as_of
        if r.valid or r.refreshed_all:
            touched = (
                None if r.refreshed_all else valid_events(checked).select("user_id").distinct()
            )
            r.users_updated = _update_features(spark, store, r.as_of, touched, txn)
            t = r.step("user_features", t)
    _record_batch(spark, store, r, app_id, txn)
    checked.unpersist()
    r.step("record", t)
    r.seconds = time.monotonic() - t0
    return r


def _merge_aggregates(
    spark: SparkSession, store: FeatureStore, valid: DataFrame, batch_id: int, txn: Txn
) -> None:
    """MERGE-add the batch's daily partials, then its lifetime partials."""
    daily_path, life_path = store.path("user_activity_daily"), store.path("user_lifetime")
    partial = (
        daily_activity(valid)
        .select(
            *[F.col(c) for c in DAILY_COLUMNS], F.lit(batch_id).cast("long").alias("first_batch_id")
        )
        .persist()
    )
    ensure_table(spark, partial, daily_path)
    merge(
        spark,
        partial,
        daily_path,
        txn,
        on=DAILY_KEY,
        update_set=additive_update_set(DAILY_ADD_COLUMNS, DAILY_MIN_COLUMNS, DAILY_MAX_COLUMNS),
    )
    # Days this batch created (not merely added to) count once towards n_active_days. Read
    # back after the MERGE, so a replay after a crash between the two MERGEs counts the same.
    new_days = (
        store.read(spark, "user_activity_daily")
        .where(F.col("first_batch_id") == batch_id)
        .groupBy(F.col("user_id"))
        .agg(F.count(F.lit(1)).alias("new_days"))
    )
    life = (
        lifetime_aggregates(partial)
        .join(new_days, on="user_id", how="left")
        .select(
            *[
                F.coalesce(F.col("new_days"), F.lit(0)).alias(c)
                if c == "n_active_days"
                else F.col(c)
                for c in LIFETIME_COLUMNS
            ]
        )
    )
    ensure_table(spark, life, life_path)
    merge(
        spark,
        life,
        life_path,
        txn,
        on=LIFETIME_KEY,
        update_set=additive_update_set(
            LIFETIME_ADD_COLUMNS, LIFETIME_MIN_COLUMNS, LIFETIME_MAX_COLUMNS
        ),
    )
    partial.unpersist()


def _update_features(
    spark: SparkSession, store: FeatureStore, as_of: date, users: DataFrame | None, txn: Txn
) -> int:
    """Recompute user_features as of ``as_of`` for ``users`` (None: every known user)."""
    daily = store.read(spark, "user_activity_daily").where(
        F.col("activity_date") >= F.lit(as_of - timedelta(days=LOOKBACK_DAYS))
    )
    lifetime = store.read(spark, "user_lifetime")
    if users is not None:
        daily = daily.join(F.broadcast(users), on="user_id", how="left_semi")
        lifetime = lifetime.join(F.broadcast(users), on="user_id", how="left_semi")
    vectors = compute_features(daily.select(*DAILY_COLUMNS), lifetime, as_of).persist()
    n = vectors.count()
    path = store.path("user_features")
    ensure_table(spark, vectors, path, properties=CDF)
    merge(spark, vectors, path, txn, on=["user_id"], update_set=None)
    vectors.unpersist()
    return n


def _record_batch(
    spark: SparkSession, store: FeatureStore, r: BatchResult, app_id: str, txn: Txn
) -> None:
    row = [
        (
            app_id,
            r.batch_id,
            r.records,
            r.valid,
            r.quarantined,
            r.reasons,
            r.clock,
            r.watermark,
            r.partition_clocks,
            r.as_of,
            r.users_updated,
            r.refreshed_all,
            datetime.now(UTC),
        )
    ]
    append(spark.createDataFrame(row, BATCHES_SCHEMA), store.path("feature_batches"), txn)


def rebuild(
    spark: SparkSession, store: FeatureStore, events: DataFrame, rejects: DataFrame | None = None
) -> dict[str, object]:
    """Rebuild every table from a bounded set of valid events (the backfill driver).

    Same functions as the stream, applied to the whole history at once: the daily table is
    ``daily_activity(events)``, the lifetime table its aggregate, the features as of the
    midnight after the newest event. Returns counts for the caller to report.
    """
    events = events.persist()
    newest = events.agg(F.max(F.col("event_time")).alias("t")).collect()[0]["t"]
    if newest is None:
        raise ValueError("backfill: no valid events to rebuild from")
    as_of = as_of_for(newest)

    if rejects is not None:
        overwrite(rejects, store.path("quarantine"))
    overwrite(
        events.select(
            F.col("*"),
            utc_date(F.col("event_time")).alias("event_date"),
            F.lit(-1).cast("long").alias("ingest_batch_id"),
        ),
        store.path("events"),
        partition_by=["event_date"],
    )
    daily = daily_activity(events).select(
        *[F.col(c) for c in DAILY_COLUMNS], F.lit(-1).cast("long").alias("first_batch_id")
    )
    overwrite(daily, store.path("user_activity_daily"))
    daily = store.read(spark, "user_activity_daily")
    overwrite(lifetime_aggregates(daily.select(*DAILY_COLUMNS)), store.path("user_lifetime"))
    features = compute_features(
        daily.select(*DAILY_COLUMNS), store.read(spark, "user_lifetime"), as_of
    )
    overwrite(features, store.path("user_features"), properties=CDF)
    counts = {
        t: store.read(spark, t).count()
        for t in ("events", "user_activity_daily", "user_lifetime", "user_features")
    }
    events.unpersist()
    return {"as_of": as_of, "newest_event_time": newest, **counts}
