"""The feature store's Delta tables: where they live, how they read, idempotent writes.

Every table is append-only; each stream batch appends to each table at most once:

    events               bronze: every valid event (event_date and ingest_batch_id columns)
    quarantine           every rejected record: raw bytes, reason, Kafka coordinates
    user_activity_daily  silver: additive per-user, per-day partials, one set per batch
                         (reads as one row per user and day: the partials combined)
    user_features        gold: feature vectors, one per user updated in a batch, with its
                         batch_id; Change Data Feed on (reads as the latest vector per user)
    feature_batches      one row per processed batch: counts, the event-time clock, as_of

and one view, ``user_lifetime`` (lifetime aggregates from the daily table). ``read`` gives
the tables as their readers mean them; ``read_raw`` gives the stored rows.

Appends through ``append`` take an optional (app_id, version) pair that Delta skips when it
was already committed (``txnAppId``/``txnVersion``). The feature stream does not use it:
it knows its own batch from the rows' batch ids (store/ingest.py says why).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from features.aggregates import collapse_daily, lifetime_aggregates

TABLES = (
    "events",
    "quarantine",
    "user_activity_daily",
    "user_features",
    "feature_batches",
)
VIEWS = ("user_lifetime",)
# The column of each table that says which batch wrote a row (-1: a backfill).
BATCH_COLUMNS = {
    "events": "ingest_batch_id",
    "quarantine": "batch_id",
    "user_activity_daily": "batch_id",
    "user_features": "batch_id",
    "feature_batches": "batch_id",
}

_COLLECT_STATS = "spark.databricks.delta.stats.collect"
_SMALL_WRITES: weakref.WeakKeyDictionary[SparkSession, SparkSession] = weakref.WeakKeyDictionary()
_TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
_TXN_VERSION = "spark.databricks.delta.write.txnVersion"


def table_exists(spark: SparkSession, path: str) -> bool:
    """True when ``path`` holds a Delta table, as of now.

    Not ``DeltaTable.isDeltaTable``: it answers from Delta's cached log, and a log first
    seen while another process was creating the table (its ``_delta_log`` there, still
    empty) stays "no table" in this session for as long as the cache keeps it; a scorer
    waiting for ``user_features`` waited forever (docs/decisions.md 56). ``forPath``
    reads the log again."""
    try:
        DeltaTable.forPath(spark, path)
    except AnalysisException:
        return False
    return True


@dataclass(frozen=True)
class FeatureStore:
    """Paths of the feature-store tables under one warehouse root (local, s3a://, hdfs://)."""

    warehouse: str

    def path(self, table: str) -> str:
        if table not in TABLES:
            raise KeyError(f"unknown feature-store table {table!r}; known: {', '.join(TABLES)}")
        return f"{self.warehouse.rstrip('/')}/{table}"

    def exists(self, spark: SparkSession, table: str) -> bool:
        base = "user_activity_daily" if table in VIEWS else table
        return table_exists(spark, self.path(base))

    def read_raw(self, spark: SparkSession, table: str, version: int | None = None) -> DataFrame:
        """The stored rows of a table (at ``version``, default the current one)."""
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(table))

    def read(self, spark: SparkSession, table: str, version: int | None = None) -> DataFrame:
        """A table as its readers mean it: the daily table one row per (user, day), the
        features one vector per user, ``user_lifetime`` from the daily table."""
        if table == "user_lifetime":
            return lifetime_aggregates(self.read(spark, "user_activity_daily", version))
        raw = self.read_raw(spark, table, version)
        if table == "user_activity_daily":
            return collapse_daily(raw)
        if table == "user_features":
            return latest_per_user(raw)
        return raw

    def version(self, spark: SparkSession, table: str) -> int:
        """The table's current Delta version (for lineage)."""
        return int(DeltaTable.forPath(spark, self.path(table)).history(1).collect()[0]["version"])


def latest_per_user(features: DataFrame) -> DataFrame:
    """The newest vector per user of ``user_features`` (by as_of, then the writing batch),
    without the batch_id column."""
    order = [F.col("as_of").desc()]
    if "batch_id" in features.columns:  # tables that other tools wrote may lack it
        order.append(F.col("batch_id").desc())
    newest = Window.partitionBy(F.col("user_id")).orderBy(*order)
    return (
        features.select(F.col("*"), F.row_number().over(newest).alias("_rank"))
        .where(F.col("_rank") == 1)
        .select(*[F.col(c) for c in features.columns if c != "batch_id"])
    )


def newest_version_from(spark: SparkSession, path: str, version: int) -> int:
    """The table's newest version, looked for from ``version`` on: a file-exists check per
    version in ``_delta_log`` (cheap when the caller is near the end; no Spark job).
    ``version - 1`` when ``version`` does not exist yet."""
    hadoop_path = spark._jvm.org.apache.hadoop.fs.Path  # type: ignore[union-attr]
    log = hadoop_path(f"{path.rstrip('/')}/_delta_log")
    fs = log.getFileSystem(spark._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    while fs.exists(hadoop_path(log, f"{version:020d}.json")):
        version += 1
    return version - 1


def small_writes(spark: SparkSession) -> SparkSession:
    """A session of the same application whose Delta writes collect no file statistics.

    For the appends of a few thousand rows that a batch builds on the driver: collecting
    statistics made each such commit 0.1-0.2 s slower, about 0.3 s of a 1,000-event batch
    whose four appends share two cores (docs/decisions.md, decision 41). Their tables are
    read whole (the features' change feed, the latest vector per user) or by a few
    filters over small files, where statistics skip little. A DataFrame writes with the
    conf of the session that created it: build those rows with ``small_writes(spark)``."""
    session = _SMALL_WRITES.get(spark)
    if session is None:
        session = _SMALL_WRITES[spark] = spark.newSession()
        session.conf.set(_COLLECT_STATS, "false")
    return session


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
    txn: Txn | None = None,
    *,
    partition_by: Sequence[str] = (),
    properties: dict[str, str] | None = None,
) -> None:
    """Append ``df`` to the Delta table at ``path`` (created on first write); once per txn
    when one is given."""
    writer = df.write.format("delta").mode("append")
    if txn is not None:
        writer = writer.options(**txn.options())
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
