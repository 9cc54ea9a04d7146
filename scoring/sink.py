"""Where scores go: the Delta table ``churn_scores`` (exactly once) and a Kafka topic (at least
once, deduplicated by ``record_id``).

Order per write: Kafka first, then the Delta append. A job that dies between the two
re-sends the same records (same ``record_id``, same bytes) and then commits the table once;
a job that dies after the commit finds its rows there and skips the batch
(:meth:`ScoreSink.already_written`).

Each sink drops a write whose (writer, version) is not newer than the newest one committed:
it reads that from the table at its first write of a writer, then keeps it in memory. The
rule Delta's ``txnAppId``/``txnVersion`` applies, without the transaction-state job Delta
runs per checked commit (0.6 s of a 1 s append; docs/decisions.md, decision 30).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from infra import faults
from scoring.score import OUTPUT_COLUMNS
from store.tables import Txn, append, table_exists

SCORES_TABLE = "churn_scores"
KAFKA_SCHEMA_VERSION = 2  # 2: status, and lapsed records without a score
REASON_TYPE = "array<struct<feature:string,value:double,contribution:double>>"
# score_frame's output as Spark types; the table adds who wrote each row, in which batch.
SCORE_FRAME_SCHEMA = (
    "record_id string, user_id string, score double, risk_band string, status string, "
    "model_name string, model_version bigint, features_as_of date, features_version bigint, "
    f"scored_at timestamp, reasons {REASON_TYPE}"
)
SCORES_SCHEMA = f"{SCORE_FRAME_SCHEMA}, writer string, batch_id bigint"
# The Kafka value: every column but the writer bookkeeping, plus the JSON schema version.
KAFKA_FIELDS: tuple[str, ...] = OUTPUT_COLUMNS


def scores_path(warehouse: str) -> str:
    """``churn_scores`` next to the feature-store tables."""
    return f"{warehouse.rstrip('/')}/{SCORES_TABLE}"


def to_spark(
    spark: SparkSession, scored: pd.DataFrame, writer: str = "", batch_id: int = -1
) -> DataFrame:
    """score_frame output (plus who wrote it, and in which batch) as a DataFrame of SCORES_SCHEMA."""
    frame = scored.assign(writer=writer, batch_id=batch_id)
    return spark.createDataFrame(frame, SCORES_SCHEMA)


def kafka_records(scores: DataFrame) -> DataFrame:
    """key = user_id, value = the score as JSON (nulls kept, timestamps ISO-8601 in UTC)."""
    value = F.struct(
        F.lit(KAFKA_SCHEMA_VERSION).alias("schema_version"), *[F.col(c) for c in KAFKA_FIELDS]
    )
    return scores.select(
        F.col("user_id").cast("binary").alias("key"),
        F.to_json(value, {"ignoreNullFields": "false"}).cast("binary").alias("value"),
    )


@dataclass(frozen=True)
class ScoreSink:
    """The scores table at ``path`` and, when ``topic`` is set, the Kafka topic."""

    path: str
    topic: str | None = None
    kafka_options: dict[str, str] = field(default_factory=dict)
    # writer -> the newest version committed for it (read from the table once, then kept).
    committed: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def exists(self, spark: SparkSession) -> bool:
        return table_exists(spark, self.path)

    def read(self, spark: SparkSession) -> DataFrame:
        return spark.read.format("delta").load(self.path)

    def already_written(self, spark: SparkSession, writer: str, batch_id: int) -> bool:
        """True when rows of this (writer, batch) are committed: the batch must not run again."""
        if not self.exists(spark):
            return False
        rows = self.read(spark).where((F.col("writer") == writer) & (F.col("batch_id") == batch_id))
        return bool(rows.limit(1).count())

    def newest_version(self, spark: SparkSession, writer: str) -> int:
        """The newest batch id (txn version) ``writer`` committed, or -1."""
        if not self.exists(spark):
            return -1
        rows = self.read(spark).where(F.col("writer") == writer).agg(F.max("batch_id")).first()
        return -1 if rows is None or rows[0] is None else int(rows[0])

    def has_writer(self, spark: SparkSession, writer: str) -> bool:
        return self.exists(spark) and bool(
            self.read(spark).where(F.col("writer") == writer).limit(1).count()
        )

    def last_model(self, spark: SparkSession, writer: str) -> tuple[str, int] | None:
        """(model name, version) of the newest batch ``writer`` wrote, or None."""
        if not self.exists(spark):
            return None
        rows = (
            self.read(spark)
            .where(F.col("writer") == writer)
            .orderBy(F.col("batch_id").desc())
            .select("model_name", "model_version")
            .limit(1)
            .collect()
        )
        return (rows[0]["model_name"], int(rows[0]["model_version"])) if rows else None

    def upgrade(self, spark: SparkSession) -> None:
        """Give a table written before records had a ``status`` that column (null there,
        read as ``scored`` by scoring.latest: every older row is a score)."""
        if self.exists(spark) and "status" not in self.read(spark).columns:
            spark.sql(
                f"ALTER TABLE delta.`{self.path}` ADD COLUMNS (status string AFTER risk_band)"
            )

    def write(self, scores: DataFrame, txn: Txn) -> bool:
        """Kafka (if configured), then the Delta append, once per ``txn``; False when this
        sink already committed ``txn`` (or a newer version of its writer) and wrote nothing."""
        if txn.app_id not in self.committed:
            self.upgrade(scores.sparkSession)
            self.committed[txn.app_id] = self.newest_version(scores.sparkSession, txn.app_id)
        if txn.version <= self.committed[txn.app_id]:
            return False
        if self.topic:
            (
                kafka_records(scores)
                .write.format("kafka")
                .options(**self.kafka_options)
                .option("topic", self.topic)
                .save()
            )
            faults.reached("scores.sent", txn.version)
        append(scores, self.path)
        self.committed[txn.app_id] = txn.version
        return True
