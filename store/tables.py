"""The feature store's Delta tables: where they live, their schemas, idempotent writes.

    events               bronze: every valid event, append-only, partitioned by event_date
    quarantine           every rejected record: raw bytes, reason, Kafka coordinates
    user_activity_daily  silver: additive per-user, per-day aggregates (MERGE-add)
    user_lifetime        mergeable lifetime aggregates per user (MERGE-add, min, max)
    user_features        gold: the latest feature vector per user + as_of; Change Data Feed on
    feature_batches      one row per processed batch: counts, the event-time clock, as_of

Every write takes a (app_id, version) pair and is skipped by Delta when that transaction was
already committed (``txnAppId``/``txnVersion``), so a replayed micro-batch changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession

TABLES = (
    "events",
    "quarantine",
    "user_activity_daily",
    "user_lifetime",
    "user_features",
    "feature_batches",
)

_TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
_TXN_VERSION = "spark.databricks.delta.write.txnVersion"


@dataclass(frozen=True)
class FeatureStore:
    """Paths of the feature-store tables under one warehouse root (local, s3a://, hdfs://)."""

    warehouse: str

    def path(self, table: str) -> str:
        if table not in TABLES:
            raise KeyError(f"unknown feature-store table {table!r}; known: {', '.join(TABLES)}")
        return f"{self.warehouse.rstrip('/')}/{table}"

    def exists(self, spark: SparkSession, table: str) -> bool:
        return DeltaTable.isDeltaTable(spark, self.path(table))

    def read(self, spark: SparkSession, table: str) -> DataFrame:
        return spark.read.format("delta").load(self.path(table))

    def version(self, spark: SparkSession, table: str) -> int:
        """The table's current Delta version (for lineage)."""
        return int(DeltaTable.forPath(spark, self.path(table)).history(1).collect()[0]["version"])


@dataclass(frozen=True)
class Txn:
    """An idempotency key for one logical write: Delta skips a (app_id, version) seen before."""

    app_id: str
    version: int

    def options(self) -> dict[str, str]:
        return {"txnAppId": self.app_id, "txnVersion": str(self.version)}


def append(
    df: DataFrame,
    path: str,
    txn: Txn,
    *,
    partition_by: Sequence[str] = (),
    properties: dict[str, str] | None = None,
) -> None:
    """Append ``df`` to the Delta table at ``path`` (created on first write), once per txn."""
    writer = df.write.format("delta").mode("append").options(**txn.options())
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    for key, value in (properties or {}).items():
        writer = writer.option(key, value)
    writer.save(path)


def overwrite(
    df: DataFrame,
    path: str,
    *,
    partition_by: Sequence[str] = (),
    properties: dict[str, str] | None = None,
) -> None:
    """Replace the table's contents (backfills); creates it when missing."""
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    for key, value in (properties or {}).items():
        writer = writer.option(key, value)
    writer.save(path)


def ensure_table(
    spark: SparkSession,
    df: DataFrame,
    path: str,
    *,
    partition_by: Sequence[str] = (),
    properties: dict[str, str] | None = None,
) -> None:
    """Create an empty table with ``df``'s schema when none exists (so MERGE has a target)."""
    if not DeltaTable.isDeltaTable(spark, path):
        overwrite(df.limit(0), path, partition_by=partition_by, properties=properties)


def merge(
    spark: SparkSession,
    source: DataFrame,
    path: str,
    txn: Txn,
    *,
    on: Sequence[str],
    update_set: dict[str, str] | None,
    insert_all: bool = True,
) -> None:
    """MERGE ``source`` into ``path`` on the key columns, once per txn.

    ``update_set`` maps target column -> SQL expression over ``t`` (target) and ``s``
    (source); None updates every column from the source.
    """
    target = DeltaTable.forPath(spark, path)
    cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in on)
    builder = target.alias("t").merge(source.alias("s"), cond)
    builder = (
        builder.whenMatchedUpdateAll()
        if update_set is None
        else builder.whenMatchedUpdate(set=cast(dict[str, str | Column], update_set))
    )
    if insert_all:
        builder = builder.whenNotMatchedInsertAll()
    conf = spark.conf
    conf.set(_TXN_APP_ID, txn.app_id)
    conf.set(_TXN_VERSION, str(txn.version))
    try:
        builder.execute()
    finally:
        conf.unset(_TXN_APP_ID)
        conf.unset(_TXN_VERSION)


def additive_update_set(
    add: Sequence[str], low: Sequence[str], high: Sequence[str], assign: Sequence[str] = ()
) -> dict[str, str]:
    """The MERGE-add update: counts and sums add, firsts take the min, lasts the max."""
    out = {c: f"coalesce(t.`{c}`, 0) + coalesce(s.`{c}`, 0)" for c in add}
    out |= {c: f"least(t.`{c}`, s.`{c}`)" for c in low}  # least/greatest skip nulls
    out |= {c: f"greatest(t.`{c}`, s.`{c}`)" for c in high}
    out |= {c: f"s.`{c}`" for c in assign}
    return out
