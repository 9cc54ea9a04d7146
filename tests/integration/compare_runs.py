"""Compare two runs of the pipeline table by table, in a process of its own (a Spark session
for a config on object storage: see check_on_store.py).

    python -m tests.integration.compare_runs <config.yaml> <reference warehouse> <other warehouse>

The reference is a ``local[2]`` run, the other the same pipeline submitted to the standalone
cluster (tests/integration/test_cluster_stack.py), whose warehouse also holds
``backfill/`` (jobs.backfill_features --warehouse) and ``batch_scores`` (jobs.score_batch
--output). Prints one line per comparison; exits 1 when any differs.
"""

from __future__ import annotations

import sys

from pyspark.errors import PySparkAssertionError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import MapType
from pyspark.testing import assertDataFrameEqual

from infra.config import load_config
from infra.spark import build_spark
from scoring.latest import current

# Columns that name the run rather than the data: the query's id (from its checkpoint's
# path), wall-clock and commit times, and the model's registered name and version (the
# cluster's training registers under a name of its own).
RUN_COLUMNS = {
    "feature_batches": frozenset({"app_id", "processed_at"}),
    "churn_scores": frozenset({"model_name", "model_version", "scored_at", "writer", "record_id"}),
}
FEATURE_TABLES = ("events", "quarantine", "user_activity_daily", "user_features")
SCORE_COLUMNS = ["user_id", "features_as_of", "score", "risk_band", "reasons"]


def _comparable(df: DataFrame, drop: frozenset[str]) -> DataFrame:
    """Set operations refuse maps: each becomes its entries, sorted."""
    cols = [
        F.array_sort(F.map_entries(F.col(f.name))).alias(f.name)
        if isinstance(f.dataType, MapType)
        else F.col(f.name)
        for f in df.schema.fields
        if f.name not in drop
    ]
    return df.select(*cols)


def difference(a: DataFrame, b: DataFrame, drop: frozenset[str] = frozenset()) -> str | None:
    """None when both hold the same rows (as multisets, ``drop`` left out); else what differs."""
    a, b = _comparable(a, drop), _comparable(b, drop)
    if a.columns != b.columns:
        return f"columns {a.columns} != {b.columns}"
    only_a, only_b = a.exceptAll(b).count(), b.exceptAll(a).count()
    if only_a or only_b:
        return f"{only_a} row(s) only in the reference, {only_b} only in the other"
    return None


def compare(spark: SparkSession, reference: str, other: str) -> list[str]:
    """Each comparison's line; a line starting with "DIFFERS" is a failure."""

    def read(root: str, table: str) -> DataFrame:
        return spark.read.format("delta").load(f"{root.rstrip('/')}/{table}")

    def line(what: str, a: DataFrame, b: DataFrame, drop: frozenset[str] = frozenset()) -> str:
        diff = difference(a, b, drop)
        rows = a.count()
        kept = f" (run columns left out: {', '.join(sorted(drop))})" if drop else ""
        return f"{'DIFFERS' if diff else 'identical'}  {what}: {rows:,} rows{kept}" + (
            f": {diff}" if diff else ""
        )

    lines = []
    for table in (*FEATURE_TABLES, "feature_batches", "churn_scores"):
        drop = RUN_COLUMNS.get(table, frozenset())
        lines.append(line(f"{table} (stream)", read(reference, table), read(other, table), drop))
    # The backfill numbers its batch -1 (decision 36), and sums a day's amounts in another
    # order than the stream's batches did: equal within floating point, not bit for bit.
    backfill = f"{other.rstrip('/')}/backfill"
    for table in ("user_activity_daily", "user_features"):
        a, b = read(reference, table).drop("batch_id"), read(backfill, table).drop("batch_id")
        try:
            assertDataFrameEqual(a, b, rtol=1e-9, atol=1e-9)
            lines.append(
                f"equal      {table} (backfill): {a.count():,} rows (batch_id left out; floats within 1e-9)"
            )
        except PySparkAssertionError as exc:
            lines.append(f"DIFFERS  {table} (backfill): {str(exc)[:2000]}")
    # The batch scorer on the cluster against the stream's live scores on local[2]: both
    # score every current vector in the champion's population with the same model.
    live = current(read(reference, "churn_scores"))
    lines.append(
        line(
            "churn_scores (batch) vs the stream's live scores",
            live.select(*SCORE_COLUMNS),
            read(other, "batch_scores").select(*SCORE_COLUMNS),
        )
    )
    return lines


def main(argv: list[str]) -> int:
    config, reference, other = argv
    cfg = load_config(config, environ={})
    spark = build_spark(cfg, app_name="compare-runs")
    try:
        lines = compare(spark, reference, other)
    finally:
        spark.stop()
    print("\n".join(lines), flush=True)
    return 1 if any(line.startswith("DIFFERS") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
