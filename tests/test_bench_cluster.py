"""The cluster benchmark's reading of the feature stream's log (benchmarks/bench_cluster.py);
the benchmark itself runs on a real standalone cluster (`make bench BENCH=cluster`)."""

from __future__ import annotations

import pytest

from benchmarks.bench_cluster import batch_times, steady_rate, step_seconds

LOG = """\
26/12/07 19:41:51 WARN SparkStringUtils: Truncated the string representation of a plan
stream_features: batch 0: 43,778 records -> 43,735 valid, 43 quarantined (not_json=14); \
clock 2024-03-30 23:43:57, watermark 2024-03-30 23:14:21, as_of 2024-03-31; features for \
440 users (all: as-of moved); 31.7s (parse=13.6 validate=0.2 write=16.9)
stream_features: batch 1: 40,000 records -> 40,000 valid, 0 quarantined (none); clock \
2024-04-01 00:00:00, watermark 2024-03-31 23:00:00, as_of 2024-04-01; features for 12 \
touched users; 8.0s (parse=3.0 write=5.0)
stream_features: batch 2: 20,000 records -> 20,000 valid, 0 quarantined (none); clock \
2024-04-02 00:00:00, watermark 2024-04-01 23:00:00, as_of 2024-04-02; features for 7 \
touched users; 2.0s (parse=1.0 write=1.0)
"""


def test_each_batch_line_gives_its_records_and_seconds():
    assert batch_times(LOG) == [(0, 43_778, 31.7), (1, 40_000, 8.0), (2, 20_000, 2.0)]


def test_the_rate_leaves_the_warm_up_batch_out_unless_it_is_the_only_one():
    assert steady_rate(batch_times(LOG)) == pytest.approx(60_000 / 10.0)
    assert steady_rate([(0, 1_000, 4.0)]) == pytest.approx(250.0)


def test_the_steps_add_up_over_the_batches_after_the_first():
    assert step_seconds(LOG) == {"parse": 4.0, "write": 6.0}
