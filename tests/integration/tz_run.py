"""Ingest and training's point-in-time rows, for test_time_zones.py (not a test module):
``TZ=<zone> python -m tests.integration.tz_run <out dir>``, or ``run(spark, out)``.

Simulated events go through the stream's batch function as three Kafka-shaped micro-batches
(so each batch's clocks also go through the ``feature_batches`` round trip), then training
plans its split and builds its rows from the daily table. The tables land in
``<out>/warehouse``, the rows and the plan in ``<out>/training.parquet`` and
``<out>/plan.json``."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import SparkSession

from infra.config import load_config
from infra.spark import build_spark
from sources.simulator import SimulationConfig, simulate
from store.ingest import IngestRules, process_batch
from store.tables import FeatureStore
from training.dataset import daily_columns
from training.pipeline import collect_rows, data_range, plan_split

RAW = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
# The producer's clock, after every simulated event; aware, as a Kafka timestamp is.
SENT = datetime(2024, 6, 1, tzinfo=UTC)
SIMULATION = SimulationConfig(n_users=30, days=90, seed=21)  # 3+ labelled cutoffs
BATCHES = 3


def run(spark: SparkSession, out: Path) -> None:
    """Ingest, then the training rows, into ``out``."""
    cfg = load_config("local")
    store = FeatureStore(str(out / "warehouse"))
    events = sorted(simulate(SIMULATION), key=lambda e: e["event_time"])
    size = -(-len(events) // BATCHES)
    rules = IngestRules(allowed_lateness_s=3 * 86400)
    for batch_id in range(BATCHES):
        part = events[batch_id * size : (batch_id + 1) * size]
        rows = [
            (
                bytearray(e["user_id"].encode()),
                bytearray(json.dumps(e).encode()),
                "events",
                n % 2,
                batch_id * size + n,
                SENT,
            )
            for n, e in enumerate(part)
        ]
        result = process_batch(
            spark, store, spark.createDataFrame(rows, RAW), batch_id, rules, "tz"
        )
        print(result.line(), file=sys.stderr, flush=True)

    t = cfg.training
    daily = daily_columns(store.read_raw(spark, t.table))
    first_day, data_end = data_range(daily)
    split = plan_split(first_day, data_end, t)
    cutoffs = sorted({*split.train, *split.valid, *split.test})
    rows = collect_rows(daily, cutoffs, lookback_days=t.lookback_days, horizon_days=t.horizon_days)
    rows.to_parquet(out / "training.parquet")
    plan = {"first_day": first_day, "data_end": data_end, "cutoffs": cutoffs}
    (out / "plan.json").write_text(json.dumps(plan, default=str))


if __name__ == "__main__":
    # The host's zone as the process starts, before build_spark pins it: the test checks
    # the run really was in the zone it asked for (no tzdata would make every zone UTC).
    winter = time.localtime(datetime(2024, 1, 15, tzinfo=UTC).timestamp())
    Path(sys.argv[1], "utc_offset_s").write_text(str(winter.tm_gmtoff))
    session = build_spark(load_config("local"), app_name="tz-run")
    run(session, Path(sys.argv[1]))
    session.stop()
