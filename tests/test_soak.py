"""The soak's readings of a streaming query's checkpoint and a Delta log, on files laid out
as Spark and Delta write them (no stack needed)."""

import json

from benchmarks.soak import (
    default_rate,
    feature_lag,
    grew,
    jvm_size_mib,
    scorer_lag,
    slope_mib_per_h,
    thirds,
)


def checkpoint(root, batches: dict[int, dict], committed: list[int]):
    (root / "offsets").mkdir(parents=True)
    (root / "commits").mkdir()
    for batch, offsets in batches.items():
        meta = {"batchWatermarkMs": 0, "batchTimestampMs": 0, "conf": {}}
        (root / "offsets" / str(batch)).write_text(
            "v1\n" + json.dumps(meta) + "\n" + json.dumps(offsets)
        )
    for batch in committed:
        (root / "commits" / str(batch)).write_text('v1\n{"nextBatchWatermarkMs":0}')
    return root


def test_feature_lag_counts_records_past_the_newest_committed_batch(tmp_path):
    cp = checkpoint(
        tmp_path / "cp",
        {0: {"events": {"0": 10, "1": 5}}, 1: {"events": {"0": 40, "1": 35}}},
        committed=[0],  # batch 1 planned, not committed
    )
    assert feature_lag(100, cp) == 100 - 15
    empty = checkpoint(tmp_path / "new", {}, committed=[])
    assert feature_lag(100, empty) == 100


def test_scorer_lag_counts_table_versions_past_the_one_read(tmp_path):
    table = tmp_path / "user_features"
    (table / "_delta_log").mkdir(parents=True)
    for version in range(8):
        (table / "_delta_log" / f"{version:020d}.json").write_text("{}")
    source = {"sourceVersion": 1, "reservoirVersion": 5, "index": -1, "isStartingVersion": False}
    cp = checkpoint(tmp_path / "cp", {3: source}, committed=[3])
    assert scorer_lag(table, cp) == 2
    assert scorer_lag(table, checkpoint(tmp_path / "new", {}, committed=[])) == 7


def test_default_rate_is_half_the_latest_stream_result(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text(
        "\n".join(
            json.dumps(r)
            for r in (
                {"bench": "stream", "sustained_eps": 40_000},
                {"bench": "stream", "sustained_eps": 30_000},
                {"bench": "parse", "ratio": 2},
            )
        )
    )
    assert default_rate(results)[0] == 15_000
    assert default_rate(tmp_path / "missing.jsonl")[0] == 49_286 / 2


def test_thirds_and_slope():
    assert thirds([1, 2, 3, 4, 5, 6, 7]) == ([1, 2], [3, 4], [5, 6, 7])
    assert slope_mib_per_h([0, 1800, 3600], [100, 150, 200]) == 100


def test_a_jobs_jvm_is_judged_by_its_heap_in_use_and_its_size_by_a_ceiling():
    ceiling = jvm_size_mib("2g") + 1536
    assert ceiling == 3584
    # The feature stream's JVM in the first flat-memory soak: its size rose towards -Xmx.
    size = {"second_third_median": 1763, "last_third_median": 2169, "peak": 2178}
    assert not grew("stream_features.jvm", size, ceiling)
    assert grew("stream_features.jvm", {**size, "peak": 3600}, ceiling)
    # The heap in use is judged by its lows: the live set after collections.
    heap = {"second_third_low": 300, "last_third_low": 390}
    assert not grew("stream_features.jvm_heap", heap, ceiling)
    assert grew("stream_features.jvm_heap", {**heap, "last_third_low": 400}, ceiling)
    # Everything else by its medians.
    python = {"second_third_median": 375, "last_third_median": 476}
    assert not grew("stream_features.python", python, ceiling)
    assert grew("stream_features.python", {**python, "last_third_median": 477}, ceiling)
