"""Rebuild the feature store from a log file by the stream's own batches (docs/decisions.md 36).

A log backfill is the feature stream run over files instead of a topic: the log is read in
Spark (each task converts its files with ``sources.replay``, the same conversion the
replay into Kafka uses), its records get Kafka's shape, and ``store.ingest.process_batch``
applies them batch by batch with the stream's rules: the one validator, duplicates, the
future-skew and the lateness rule, the hot state, the quarantine. Nothing of the log is
held on the driver beyond what the stream holds.

Lineage: ``source_topic`` is ``log:<the sources given>``, ``source_partition`` 0 and
``source_offset`` the file's number times ``FILE_STRIDE`` plus the row's place in the file
(sorted by event time, as the replay sends it), so offsets follow the order of the log.
Batches are numbered -K..-1: a backfill's rows have negative batch ids (the rebuild from
bronze writes -1), which a stream started later on the same warehouse loads as history
before its own batch 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from infra.streaming import query_app_id
from sources.replay import Replay, ReplayMapping, missing_columns, resolve_files
from store.ingest import BatchResult, IngestRules, process_batch
from store.state import StreamState
from store.tables import TABLES, FeatureStore

# Rows of one file get offsets file * FILE_STRIDE + row: ordered, and readable.
FILE_STRIDE = 1_000_000_000
KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)


@dataclass(frozen=True)
class _Convert:
    """The mapInArrow function: (file number, path, label) rows -> Kafka-shaped records."""

    mapping: ReplayMapping
    topic: str
    now: datetime

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            columns = [batch.column(c).to_pylist() for c in ("number", "path", "label")]
            for number, path, label in zip(*columns, strict=True):
                keys, values = [], []
                # The label names default event ids ("<label>#<row>"), as in jobs.replay.
                for r in Replay(path, self.mapping, files=[(Path(path), label)]):
                    keys.append(None if r.key is None else r.key.encode())
                    values.append(json.dumps(r.value, separators=(",", ":")).encode())
                if len(values) >= FILE_STRIDE:
                    raise ValueError(f"backfill: {path} holds {FILE_STRIDE:,} rows or more")
                n = len(values)
                yield pa.RecordBatch.from_pydict(
                    {
                        "key": pa.array(keys, pa.binary()),
                        "value": pa.array(values, pa.binary()),
                        "topic": pa.array([self.topic] * n, pa.string()),
                        "partition": pa.array([0] * n, pa.int32()),
                        "offset": pa.array(
                            [number * FILE_STRIDE + i for i in range(n)], pa.int64()
                        ),
                        "timestamp": pa.array([self.now] * n, pa.timestamp("us", tz="UTC")),
                    }
                )


def log_records(
    spark: SparkSession,
    sources: Sequence[str],
    mapping: ReplayMapping,
    now: datetime | None = None,
) -> DataFrame:
    """The log's records shaped like Kafka's (key, value, topic, partition, offset,
    timestamp = ``now``, the backfill's time, which the future-skew rule compares with).
    Raises FileNotFoundError or ValueError (a mapped column missing) before Spark runs."""
    files = [f for s in sources for f in resolve_files(s)]
    for path, label in files:
        if missing := missing_columns(path, mapping):
            raise ValueError(
                f"{label} has no column {', '.join(missing)} (see the mapping options)"
            )
    topic = "log:" + ",".join(sources)
    listing = spark.createDataFrame(
        [(i, str(path), label) for i, (path, label) in enumerate(files)],
        "number long, path string, label string",
    ).repartition(max(1, min(len(files), spark.sparkContext.defaultParallelism * 4)))
    return listing.mapInArrow(_Convert(mapping, topic, now or datetime.now(UTC)), KAFKA_SCHEMA)


def offset_ranges(counts: dict[int, int], batch_records: int) -> list[tuple[int, int]]:
    """[start, end) offset ranges of at most ``batch_records`` records, in the log's order,
    from the number of records of each file."""
    ranges: list[tuple[int, int]] = []
    start, size = None, 0
    for number in sorted(counts):
        row = 0
        while row < counts[number]:
            take = min(batch_records - size, counts[number] - row)
            if start is None:
                start = number * FILE_STRIDE + row
            row += take
            size += take
            if size == batch_records:
                ranges.append((start, number * FILE_STRIDE + row))
                start, size = None, 0
    if start is not None:
        last = max(counts)
        ranges.append((start, last * FILE_STRIDE + counts[last]))
    return ranges


def backfill_log(
    spark: SparkSession,
    store: FeatureStore,
    raw: DataFrame,
    rules: IngestRules,
    *,
    batch_records: int,
    log: Callable[[str], None] = print,
) -> list[BatchResult]:
    """Empty the store's tables, then apply ``raw`` (``log_records``) batch by batch."""
    raw = raw.persist()
    try:
        counts = {
            int(r["number"]): int(r["count"])
            for r in raw.groupBy((F.col("offset") / FILE_STRIDE).cast("long").alias("number"))
            .count()
            .collect()
        }
        if not counts:
            raise ValueError("backfill: the log holds no records")
        for table in TABLES:
            if store.exists(spark, table):
                DeltaTable.forPath(spark, store.path(table)).delete()
        ranges = offset_ranges(counts, batch_records)
        app = query_app_id("backfill", store.warehouse)
        state = StreamState.load(spark, store, app, rules.allowed_lateness_s)
        results = []
        for i, (start, end) in enumerate(ranges):
            batch = raw.where((F.col("offset") >= start) & (F.col("offset") < end))
            r = process_batch(spark, store, batch, i - len(ranges), rules, app, state=state)
            log(f"backfill: [{i + 1}/{len(ranges)}] {r.line()}")
            results.append(r)
        return results
    finally:
        raw.unpersist()
