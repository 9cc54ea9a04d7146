"""Plumbing both streaming jobs share: idempotency ids, checkpoints, triggers, the run loop."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery


def query_app_id(query: str, checkpoint: str) -> str:
    """The idempotency id of a query's writes: stable for as long as its checkpoint lives."""
    return f"{query}-" + hashlib.sha1(checkpoint.encode()).hexdigest()[:12]


def checkpoint_started(spark: SparkSession, checkpoint: str) -> bool:
    """True when the checkpoint holds an offset log (local dirs and object stores alike)."""
    path = spark._jvm.org.apache.hadoop.fs.Path(f"{checkpoint}/offsets")  # type: ignore[union-attr]
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    return bool(fs.exists(path))


def start_foreach_batch(
    source: DataFrame,
    name: str,
    each_batch: Callable[[DataFrame, int], None],
    checkpoint: str,
    *,
    trigger_s: float,
    available_now: bool,
) -> StreamingQuery:
    """Start ``source`` -> foreachBatch with its own checkpoint; trigger 0 = availableNow."""
    writer = (
        source.writeStream.queryName(name)
        .foreachBatch(each_batch)
        .option("checkpointLocation", checkpoint)
    )
    if available_now or trigger_s == 0:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{trigger_s} seconds")
    return writer.start()


def run_until_stopped(spark: SparkSession, query: StreamingQuery) -> None:
    """Wait for the query; Ctrl-C stops it cleanly; the session stops either way."""
    try:
        query.awaitTermination()
    except KeyboardInterrupt:
        query.stop()
    finally:
        spark.stop()
