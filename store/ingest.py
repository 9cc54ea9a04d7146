"""Update the feature store from one batch of Kafka records: the step both drivers share.

The streaming job calls :func:`process_batch` inside ``foreachBatch`` with a
:class:`store.state.StreamState` it keeps between batches; the backfill calls
:func:`rebuild` on bounded data. Both use the same pure functions from ``features/``.

One batch, in order:

1. parse and validate in one map-only Spark job, cached (the validator's JVM fast path
   types the plainly valid events, the Python validator checks the rest: decision 44);
   only the verdict columns (ids, times, reasons, Kafka coordinates, the fields the daily
   partials sum) come to the driver, which rejects future events (per record) and late
   events (behind the watermark minus the allowed lateness) and marks duplicates (in the
   batch, or already stored: the state holds the ids of every event date a new event can
   still be accepted on). The
   rows themselves go from the cache to the tables (docs/decisions.md, decision 31), with
   the driver's later verdicts joined in by Kafka coordinates; the bytes of a record
   rejected after the parse are read from Kafka again, as the parse keeps only its own
   rejects' bytes (decisions 40, 43). The
   watermark is the slowest Kafka partition's newest event time, so a replay whose
   partitions move through event time at different speeds rejects nothing that live
   traffic would accept;
2. the batch's daily and lifetime partials (features.aggregates), computed on the driver
   from the rows it holds, added to the state;
3. features as of the clock's next midnight computed on the driver from the state, by the
   registry's formulas (features.compute.features_in_memory), for the users the batch
   touched, or for every user when the as-of date moved (silence is a signal: recency must
   grow for users who send nothing);
4. one append per table, each started in a thread as soon as its rows are known (so the
   quarantine and bronze are written while steps 2-3 run): rejected records -> the
   dead-letter topic and ``quarantine``; valid events -> ``events``; the daily partials ->
   ``user_activity_daily``; the new vectors -> ``user_features``; and one row in
   ``feature_batches``: counts per reason, the clock (newest event time accepted), each
   partition's newest event time, the watermark, the as-of date. Each row carries the
   batch id; the batch ends when every append has committed.

Exactly once without Delta's per-commit transaction check (it costs a state job per
commit): only the first batch after a start can be a replay of a batch that died half
written, and for that one each append is skipped when rows with its batch id are there
already. Every append is one commit, so a table holds all of a batch's rows or none. A
batch counts as done when its ``feature_batches`` row is there and every table its counts
name holds its rows (``store.state.last_batch``; docs/decisions.md, decision 34); a done
batch is skipped if replayed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.aggregates import (
    DAILY_COLUMNS,
    DAILY_KEY,
    daily_activity,
    daily_in_memory,
    lifetime_aggregates,
    lifetime_in_memory,
)
from features.compute import compute_features, features_in_memory
from features.events import (
    EVENT_COLUMNS,
    check_doubtful,
    duplicate_copies,
    stage_events,
    time_rules,
    utc_date,
)
from features.expectations import Expectations
from features.validate import PARSE_REASONS
from infra.timing import StepTimes
from store.state import (
    LOOKBACK_DAYS,
    StreamState,
    batch_written,
    frame,
    naive_utc,
    stored_ids,
)
from store.state import last_batch as last_batch
from store.tables import BATCH_COLUMNS, FeatureStore, append, overwrite, small_writes

CDF = {"delta.enableChangeDataFeed": "true"}
# Bronze keeps min/max statistics only for the columns its readers filter on (the duplicate
# check, lineage, exploration): statistics on all 18 columns cost a third of its append
# (docs/decisions.md, decision 40).
BRONZE = {"delta.dataSkippingStatsColumns": "event_date,event_time,user_id,ingest_batch_id"}
BATCHES_SCHEMA = (
    "app_id string, batch_id long, records long, valid long, quarantined long, "
    "reasons map<string,long>, clock timestamp, watermark timestamp, "
    "partition_clocks map<string,timestamp>, as_of date, users_updated long, "
    "refreshed_all boolean, processed_at timestamp, dq_violations map<string,long>"
)
# The Kafka coordinates that name one record (duplicates are marked by them).
COORDINATES = ("source_topic", "source_partition", "source_offset")
# What the driver decides a batch with, and builds its daily partials from
# (features.aggregates.daily_in_memory); the rows' other columns stay in Spark.
VERDICT_COLUMNS = (
    "event_id",
    "user_id",
    "event_type",
    "event_time",
    "amount",
    "quantity",
    "event_date",
    "reject_reason",
    "kafka_timestamp",
    *COORDINATES,
)
_CACHE_COMPRESSED = "spark.sql.inMemoryColumnarStorage.compressed"
REJECT_COLUMNS = (
    "raw_key",
    "raw_value",
    "reject_reason",
    "source_topic",
    "source_partition",
    "source_offset",
    "kafka_timestamp",
)


@dataclass(frozen=True)
class IngestRules:
    """Validation limits and event-time rules (plain values; the job reads them from config)."""

    max_value_bytes: int = 65536
    max_future_skew_s: int = 3600
    allowed_lateness_s: int = 3 * 86400
    earliest_event_time: datetime | None = datetime(2000, 1, 1, tzinfo=UTC)
    expectations: Expectations = field(default_factory=Expectations)
    # Violations of this severity or above stop the stream (features.expectations).
    dq_stop_on: Literal["never", "warn", "error"] = "error"


class DataQualityError(RuntimeError):
    """A batch broke an expectation severe enough to stop the stream (``dq_stop_on``)."""

    def __init__(self, result: BatchResult, checks: list[str]) -> None:
        self.result = result
        found = ", ".join(f"{c}={result.dq[c]}" for c in checks)
        super().__init__(
            f"batch {result.batch_id}: data-quality expectations broken ({found}); the "
            "stream stops before writing its features. The batch is retried from the "
            "checkpoint at the next start (stream_features.dq_stop_on sets what stops it)"
        )


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
    dq: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: bool = False

    def line(self) -> str:
        """One progress line for logs."""
        if self.skipped:
            return f"batch {self.batch_id}: already committed, skipped"
        reasons = _counts(self.reasons) or "none"
        scope = "users (all: as-of moved)" if self.refreshed_all else "touched users"
        return (
            f"batch {self.batch_id}: {self.records:,} records -> {self.valid:,} valid, "
            f"{self.quarantined:,} quarantined ({reasons}); clock {self.clock}, "
            f"watermark {self.watermark}, "
            f"as_of {self.as_of}; features for {self.users_updated:,} {scope}; "
            + (f"dq violations: {dq}; " if (dq := _counts(self.dq)) else "")
            + f"{self.seconds:.1f}s ({self.steps_text()})"
        )


def _counts(counts: dict[str, int]) -> str:
    """``a=1, b=2`` (sorted by name) for progress lines; "" for none."""
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def as_of_for(clock: datetime) -> date:
    """Features as of the midnight after the clock: they include the clock's own (partial) day."""
    return (clock.astimezone(UTC).date() if clock.tzinfo else clock.date()) + timedelta(days=1)


def _parse(
    staged: DataFrame, rules: IngestRules
) -> tuple[DataFrame, pd.DataFrame, DataFrame | None]:
    """The batch's parsed rows (in Spark), their verdict columns (on the driver), and the
    cache of the records the Python validator checked: None when the JVM fast path typed
    every record, as it does for plainly valid traffic (then no Python runs at all)."""
    columns = [F.col(c) for c in VERDICT_COLUMNS]
    batch = staged.select(*columns, F.col("in_doubt")).toArrow().to_pandas()
    in_doubt = batch.pop("in_doubt")
    if not in_doubt.any():
        return staged, batch, None
    checked = check_doubtful(staged, max_value_bytes=rules.max_value_bytes).persist()
    parsed = staged.where(~F.col("in_doubt")).unionByName(checked)
    decided = checked.select(*columns).toArrow().to_pandas()
    return parsed, pd.concat([batch[~in_doubt], decided], ignore_index=True), checked


def _cached(staged: DataFrame) -> DataFrame:
    """The batch's staged records, persisted in memory without compression: they live for
    one batch, are read three or four times, and compressing 200,000 rows cost 0.5 s of a
    3 s step (docs/decisions.md, decision 39). Spark reads the setting when the cache is
    defined, so it is changed only around ``persist``, for no other cache of the session."""
    spark = staged.sparkSession
    before = spark.conf.get(_CACHE_COMPRESSED) or "true"
    spark.conf.set(_CACHE_COMPRESSED, "false")
    try:
        return staged.persist()
    finally:
        spark.conf.set(_CACHE_COMPRESSED, before)


def _marks(spark: SparkSession, later: pd.DataFrame) -> DataFrame:
    """The driver's later verdicts (time rules, duplicates) as a small DataFrame: the Kafka
    coordinates (``_topic``, ``_partition``, ``_offset``) and the reason (``_reason``)."""
    names = ["_topic", "_partition", "_offset", "_reason"]
    return spark.createDataFrame(
        pa.Table.from_pandas(
            later[[*COORDINATES, "reject_reason"]].set_axis(names, axis=1), preserve_index=False
        ),
        "_topic string, _partition int, _offset long, _reason string",
    )


def _with_later_rejects(parsed: DataFrame, marks: DataFrame) -> DataFrame:
    """``parsed`` with the rows the driver rejected after the parse (by Kafka coordinates)
    given the driver's reason."""
    on = [F.col(c) == F.col(m) for c, m in zip(COORDINATES, marks.columns[:3], strict=True)]
    joined = parsed.join(F.broadcast(marks), on=on, how="left")
    reason = F.coalesce(F.col("_reason"), F.col("reject_reason"))
    return joined.select(
        *[reason.alias(c) if c == "reject_reason" else F.col(c) for c in parsed.columns]
    )


def _rejects(raw: DataFrame, parsed: DataFrame, marks: DataFrame | None) -> DataFrame:
    """The batch's rejected records with their original bytes (REJECT_COLUMNS): the
    validator's from the parse, which keeps the bytes of its rejects only, and those of the
    rules applied after it (``marks``: time rules and duplicates, as the driver decided
    them) from the Kafka records, by their coordinates."""
    rejects = parsed.where(F.col("reject_reason").isin(*PARSE_REASONS)).select(
        *[F.col(c) for c in REJECT_COLUMNS]
    )
    if marks is None:
        return rejects
    on = [
        F.col(c) == F.col(m)
        for c, m in zip(("topic", "partition", "offset"), marks.columns[:3], strict=True)
    ]
    again = raw.join(F.broadcast(marks), on=on).select(
        F.col("key").alias("raw_key"),
        F.col("value").alias("raw_value"),
        F.col("_reason").alias("reject_reason"),
        F.col("topic").alias("source_topic"),
        F.col("partition").alias("source_partition"),
        F.col("offset").alias("source_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
    )
    return rejects.unionByName(again)


def _stored_days(
    spark: SparkSession, store: FeatureStore, keys: pd.MultiIndex, upto: int
) -> pd.MultiIndex:
    """Those of these (user, day) keys the daily table holds (only for days the state does not)."""
    if not len(keys) or not store.exists(spark, "user_activity_daily"):
        return keys[:0]
    days = sorted({d.date() for d in keys.get_level_values("activity_date")})
    stored = (
        store.read_raw(spark, "user_activity_daily")
        .where(F.col("activity_date").isin(days) & (F.col("batch_id") <= upto))
        .select("user_id", "activity_date")
        .distinct()
        .toArrow()
    )
    return keys.intersection(frame(stored, DAILY_KEY).index)


def _mark_stored_duplicates(
    spark: SparkSession, store: FeatureStore, state: StreamState, batch: pd.DataFrame
) -> pd.Series:
    """Which still-valid rows carry an event id already stored on the same event date."""
    rows = batch.loc[batch["reject_reason"].isna(), ["event_id", "event_date"]]
    cold = sorted(d for d in set(rows["event_date"]) if not state.holds_ids_of(d))
    stored = stored_ids(spark, store, state.upto, days=cold)  # dates the index no longer holds
    seen = pd.Series(False, index=batch.index, dtype=bool)
    for day, group in rows.groupby("event_date"):
        ids = group["event_id"].tolist()
        if state.holds_ids_of(day):
            seen[group.index] = state.ids.contains(day, ids)
        else:
            seen[group.index] = [i in stored.get(day, ()) for i in ids]
    return seen


def process_batch(
    spark: SparkSession,
    store: FeatureStore,
    raw: DataFrame,
    batch_id: int,
    rules: IngestRules,
    app_id: str,
    on_rejects: Callable[[DataFrame], None] | None = None,
    state: StreamState | None = None,
) -> BatchResult:
    """Apply one micro-batch of Kafka records to every feature-store table, exactly once.

    ``state`` is the stream's hot state, updated in place; without one it is loaded from
    the tables (what a restart does). ``on_rejects`` receives the batch's rejected records
    (raw bytes, reason, Kafka coordinates) before they are quarantined, e.g. to send them
    to the dead-letter topic.
    """
    t0 = t = time.monotonic()
    r = BatchResult(batch_id=batch_id)
    if state is None:
        state = StreamState.load(spark, store, app_id, rules.allowed_lateness_s)
    prev = state.prev
    if prev is not None and prev["batch_id"] >= batch_id:
        r.skipped = True
        return r

    # The JVM fast path over the Kafka records, cached; the Python validator over the
    # records it doubts, if any (decision 44).
    staged = _cached(stage_events(raw, max_value_bytes=rules.max_value_bytes))
    checked = None
    try:
        parsed, batch, checked = _parse(staged, rules)
        t = r.step("parse", t)
        _apply(spark, store, state, raw, parsed, batch, r, on_rejects, rules, app_id, t)
    finally:
        if checked is not None:
            checked.unpersist()
        staged.unpersist()
    r.seconds = time.monotonic() - t0
    return r


def _apply(
    spark: SparkSession,
    store: FeatureStore,
    state: StreamState,
    raw: DataFrame,
    parsed: DataFrame,
    batch: pd.DataFrame,
    r: BatchResult,
    on_rejects: Callable[[DataFrame], None] | None,
    rules: IngestRules,
    app_id: str,
    t: float,
) -> None:
    """The batch after its Spark parse: verdicts on the driver, then the appends.

    The driver holds only the narrow columns it decides with (``batch``); the rows
    themselves go from the cached parse straight to the tables (no round trip through
    Python)."""
    prev, batch_id = state.prev, r.batch_id
    watermark = prev["watermark"] if prev else None
    batch["reject_reason"] = time_rules(
        batch,
        earliest_event_time=rules.earliest_event_time,
        min_event_time=watermark - timedelta(seconds=rules.allowed_lateness_s)
        if watermark
        else None,
        max_skew_after_record_s=rules.max_future_skew_s,
    )
    in_batch = duplicate_copies(batch)
    batch.loc[in_batch, "reject_reason"] = "duplicate_event_id"
    stored = _mark_stored_duplicates(spark, store, state, batch)
    batch.loc[stored, "reject_reason"] = "duplicate_event_id"
    # Rejected by the driver, after the parse: their rows in Spark get the driver's reason.
    later = batch["reject_reason"].notna() & ~batch["reject_reason"].isin(PARSE_REASONS)
    marks = _marks(spark, batch[later]) if later.any() else None
    if marks is not None:
        parsed = _with_later_rejects(parsed, marks)
    is_valid = batch["reject_reason"].isna()

    r.reasons = {k: int(v) for k, v in batch["reject_reason"].value_counts().items()}
    r.valid = int(is_valid.sum())
    r.quarantined = sum(r.reasons.values())
    r.records = len(batch)
    r.partition_clocks = dict(prev["partition_clocks"] or {}) if prev else {}
    valid_rows = batch[is_valid]
    if len(valid_rows):
        newest = valid_rows.groupby(["source_topic", "source_partition"])["event_time"].max()
        for (topic, partition), moment in newest.items():
            key, when = f"{topic}/{partition}", naive_utc(moment)
            assert when is not None
            r.partition_clocks[key] = max(when, r.partition_clocks.get(key, when))
    r.clock = max(r.partition_clocks.values(), default=None)
    r.watermark = min(r.partition_clocks.values(), default=None)
    t = r.step("validate", t)

    this_batch = F.lit(batch_id).cast("long")
    small = small_writes(spark)  # the rows built on the driver: no file statistics
    # Each append starts as soon as its rows are known, beside the work still to do.
    with ThreadPoolExecutor(max_workers=len(BATCH_COLUMNS)) as pool:
        started: list[Future[None]] = []

        def start(table: str, write: Callable[[], None]) -> None:
            # Only the first batch after a start can have died half written.
            if not (state.may_be_replay and batch_written(spark, store, table, batch_id)):
                started.append(pool.submit(write))

        if r.quarantined:
            rejects = _rejects(raw, parsed, marks).select(F.col("*"), this_batch.alias("batch_id"))

            def quarantine() -> None:
                # Rows taken from Kafka again are read once, not once per sink.
                reread = marks is not None and on_rejects is not None
                held = rejects.persist() if reread else rejects
                try:
                    if on_rejects is not None:
                        on_rejects(held)
                    append(held, store.path("quarantine"))
                finally:
                    held.unpersist()

            start("quarantine", quarantine)
        if r.valid:
            valid = parsed.where(F.col("reject_reason").isNull())
            bronze = valid.select(
                *[F.col(c) for c in EVENT_COLUMNS],
                F.col("event_date"),
                this_batch.alias("ingest_batch_id"),
            )
            start("events", lambda: append(bronze, store.path("events"), properties=BRONZE))
            partial_t = daily_in_memory(valid_rows)
            partial = frame(partial_t, DAILY_KEY)
            new_days = (
                partial.index.difference(state.daily.index) if len(state.daily) else partial.index
            )
            old = new_days[
                [not state.holds_day(d) for d in new_days.get_level_values("activity_date")]
            ]
            new_days = new_days.difference(_stored_days(spark, store, old, state.upto))
            counted = pd.Series(1, index=new_days).groupby(level="user_id").sum()
            life = lifetime_in_memory(partial)
            life["n_active_days"] = counted.reindex(life.index, fill_value=0).astype("int64")
            state.add_daily(partial)
            state.add_lifetime(life)
            state.add_ids({d: set(g) for d, g in valid_rows.groupby("event_date")["event_id"]})
            stored_partial = partial_t.append_column(
                "batch_id", pa.array([batch_id] * len(partial_t), pa.int64())
            )
            start(
                "user_activity_daily",
                lambda: append(
                    small.createDataFrame(stored_partial), store.path("user_activity_daily")
                ),
            )
            t = r.step("aggregate", t)

        features = None
        if r.clock is not None:
            r.as_of = as_of_for(r.clock)
            r.refreshed_all = prev is None or prev["as_of"] != r.as_of
            if r.valid or r.refreshed_all:
                touched = None if r.refreshed_all else set(valid_rows["user_id"])
                features = _features(state, r.as_of, touched)
                r.users_updated = len(features)
        r.dq = rules.expectations.check(features, valid_rows, r.records, r.valid, state.recent)
        if stop := rules.expectations.stops(r.dq, rules.dq_stop_on):
            raise DataQualityError(r, stop)
        if features is not None:
            stored_features = features.append_column(
                "batch_id", pa.array([batch_id] * len(features), pa.int64())
            )
            start(
                "user_features",
                lambda: append(
                    small.createDataFrame(stored_features),
                    store.path("user_features"),
                    properties=CDF,
                ),
            )
        t = r.step("features", t)

        row = _batch_row(r, app_id)
        start(
            "feature_batches",
            lambda: append(
                small.createDataFrame([tuple(row.values())], BATCHES_SCHEMA),
                store.path("feature_batches"),
                # A table from before dq_violations gets the column (null in older rows).
                properties={"mergeSchema": "true"},
            ),
        )
        for done in started:
            done.result()
    state.advance(row, rules.allowed_lateness_s)
    r.step("write", t)


def _features(state: StreamState, as_of: date, users: set[str] | None) -> pa.Table:
    """Feature vectors as of ``as_of`` from the state, for ``users`` (None: every known user),
    computed on the driver from the registry's formulas (docs/decisions.md, decision 38)."""
    daily, lifetime = state.daily, state.lifetime
    recent = daily[
        daily.index.get_level_values("activity_date")
        >= pd.Timestamp(as_of - timedelta(days=LOOKBACK_DAYS))
    ]
    if users is not None:
        recent = recent[recent.index.get_level_values("user_id").isin(users)]
        lifetime = lifetime[lifetime.index.isin(users)]
    return features_in_memory(recent, lifetime, as_of)


def _batch_row(r: BatchResult, app_id: str) -> dict[str, Any]:
    """The batch's ``feature_batches`` row."""
    return {
        "app_id": app_id,
        "batch_id": r.batch_id,
        "records": r.records,
        "valid": r.valid,
        "quarantined": r.quarantined,
        "reasons": r.reasons,
        "clock": r.clock,
        "watermark": r.watermark,
        "partition_clocks": r.partition_clocks,
        "as_of": r.as_of,
        "users_updated": r.users_updated,
        "refreshed_all": r.refreshed_all,
        "processed_at": datetime.now(UTC),
        "dq_violations": r.dq,
    }


def rebuild(
    spark: SparkSession, store: FeatureStore, events: DataFrame, *, write_events: bool = True
) -> dict[str, object]:
    """Rebuild the derived tables from a bounded set of valid events (the backfill from bronze).

    Same functions as the stream, applied to the whole history at once: the daily table is
    ``daily_activity(events)`` (one partial per user and day, batch_id -1), the lifetime
    aggregates come from it, the features are as of the midnight after the newest event.
    With ``write_events`` the events also become the store's bronze, keeping the
    ``ingest_batch_id`` they carry (-1 when they carry none). Returns counts to report.
    """
    lineage = (
        F.col("ingest_batch_id")
        if "ingest_batch_id" in events.columns
        else F.lit(-1).cast("long").alias("ingest_batch_id")
    )
    bronze = events.select(
        *[F.col(c) for c in EVENT_COLUMNS],
        utc_date(F.col("event_time")).alias("event_date"),
        lineage,
    )
    events = events.select(*[F.col(c) for c in EVENT_COLUMNS]).persist()
    newest = events.agg(F.max(F.col("event_time")).alias("t")).collect()[0]["t"]
    if newest is None:
        raise ValueError("backfill: no valid events to rebuild from")
    as_of = as_of_for(newest)

    backfill = F.lit(-1).cast("long")
    if write_events:
        overwrite(bronze, store.path("events"), properties=BRONZE)
    daily = daily_activity(events).select(*[F.col(c) for c in DAILY_COLUMNS])
    overwrite(
        daily.select(F.col("*"), backfill.alias("batch_id")), store.path("user_activity_daily")
    )
    daily = store.read(spark, "user_activity_daily")
    features = compute_features(daily, lifetime_aggregates(daily), as_of)
    overwrite(
        features.select(F.col("*"), backfill.alias("batch_id")),
        store.path("user_features"),
        properties=CDF,
    )
    counts = {
        t: store.read(spark, t).count()
        for t in ("events", "user_activity_daily", "user_lifetime", "user_features")
    }
    events.unpersist()
    return {"as_of": as_of, "newest_event_time": newest, **counts}
