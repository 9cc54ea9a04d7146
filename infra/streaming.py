"""Plumbing both streaming jobs share: idempotency ids, checkpoints, triggers, the run loop."""

from __future__ import annotations

import hashlib
import signal
import sys
import threading
import time
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


# Batches each query (by name) has finished in this process: a stop waits for the next.
_batches_done: dict[str, int] = {}


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
    _batches_done[name] = 0

    def counted(batch: DataFrame, batch_id: int) -> None:
        each_batch(batch, batch_id)
        _batches_done[name] += 1

    writer = (
        source.writeStream.queryName(name)
        .foreachBatch(counted)
        .option("checkpointLocation", checkpoint)
    )
    if available_now or trigger_s == 0:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{trigger_s} seconds")
    return writer.start()


def run_until_stopped(
    spark: SparkSession, query: StreamingQuery, poll_s: int = 1, finish_batch_s: float = 20
) -> None:
    """Wait for the query; Ctrl-C or SIGTERM stops it cleanly; the session stops either way.

    PySpark's own SIGINT handler calls cancelAllJobs over the Py4J connection the main thread
    is blocked on in awaitTermination: a "reentrant call" traceback, and at times a broken
    connection that then fails query.stop(). Here the handler only records the request and
    the main thread, polling every ``poll_s``, stops the query itself (docs/decisions.md 35),
    once the batch in flight is done (for up to ``finish_batch_s``; after that the batch is
    abandoned, and redone at the next start; decision 58).
    """
    asked = threading.Event()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in handlers:
        signal.signal(sig, lambda *_: asked.set())
    try:
        while not asked.is_set() and not query.awaitTermination(poll_s):
            pass
        if asked.is_set() and query.isActive:
            print(f"{query.name}: stopping (signal received)", file=sys.stderr, flush=True)
            # At a batch boundary: the batch in flight is not lost work, and no Python
            # traceback from an interrupted batch reaches Spark (decision 58).
            done, deadline = _batches_done.get(query.name or ""), time.monotonic() + finish_batch_s
            while (
                query.isActive
                and query.status["isTriggerActive"]
                and _batches_done.get(query.name or "") == done
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            query.stop()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        spark.stop()
