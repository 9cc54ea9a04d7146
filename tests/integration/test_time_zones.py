"""The host's time zone changes nothing: ingest and training's rows, run under three zones,
give the same tables (docs/decisions.md 53). The other zones' runs are processes of their
own (tz_run.py), as a job on a machine set to that zone would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from pyspark.testing import assertDataFrameEqual

from infra.config import REPO_ROOT
from tests.integration.tz_run import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ZONES = ("UTC", "America/Los_Angeles", "Asia/Kolkata")
# Their UTC offsets on 2024-01-15, as each process saw its zone before build_spark.
OFFSETS_S = {"America/Los_Angeles": -8 * 3600, "Asia/Kolkata": 5 * 3600 + 1800}
# When each batch was processed: the only column that differs between runs by design.
RUN_COLUMNS = {"feature_batches": ["processed_at"]}


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    """Los Angeles and Kolkata as processes of their own, side by side; UTC here, beside
    them, in the tests' session (pinned to UTC like every session)."""
    out = {zone: tmp_path_factory.mktemp(zone.replace("/", "-")) for zone in ZONES}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN")}
    jobs = {
        zone: subprocess.Popen(
            [sys.executable, "-m", "tests.integration.tz_run", str(out[zone])],
            cwd=REPO_ROOT,
            env={**env, "TZ": zone},
            stdout=subprocess.DEVNULL,
            stderr=(out[zone] / "run.log").open("w"),
        )
        for zone in ZONES[1:]
    }
    try:
        run(spark, out["UTC"])
        for zone, job in jobs.items():
            log = (out[zone] / "run.log").read_text
            assert job.wait(600) == 0, f"{zone}: {log()[-3000:]}"
            assert int((out[zone] / "utc_offset_s").read_text()) == OFFSETS_S[zone], zone
    finally:
        for job in jobs.values():
            if job.poll() is None:
                job.kill()
    return out


def tables(run) -> list[str]:
    return sorted(p.name for p in (run / "warehouse").iterdir() if (p / "_delta_log").is_dir())


@pytest.mark.parametrize("zone", ZONES[1:])
def test_the_feature_store_is_the_same_in_every_zone(runs, spark, zone):
    utc, other = runs["UTC"], runs[zone]
    assert tables(other) == tables(utc)
    assert {"events", "feature_batches", "user_activity_daily", "user_features"} <= set(tables(utc))
    for table in tables(utc):
        a, b = (
            spark.read.format("delta")
            .load(str(run / "warehouse" / table))
            .drop(*RUN_COLUMNS.get(table, []))
            for run in (utc, other)
        )
        assert a.count() > 0, table
        assertDataFrameEqual(b, a)


@pytest.mark.parametrize("zone", ZONES[1:])
def test_training_rows_are_the_same_in_every_zone(runs, zone):
    utc, other = runs["UTC"], runs[zone]
    plan = json.loads((utc / "plan.json").read_text())
    assert plan["cutoffs"] and json.loads((other / "plan.json").read_text()) == plan
    rows = pd.read_parquet(utc / "training.parquet")
    assert len(rows) > 0
    pd.testing.assert_frame_equal(pd.read_parquet(other / "training.parquet"), rows)
