"""Both streaming jobs killed with SIGKILL twice each (CHURN_CRASH_KILLS sets another
count) while events keep arriving, each time in a window where a crash could lose or double
work (infra/faults.py), and restarted: nothing lost, nothing counted twice
(docs/reliability.md).

A producer thread sends simulated events for the whole run. The feature stream dies right
after a batch's Delta commits, before its checkpoint commit; the scorer alternately after
its Kafka write and after its Delta append. Each restarts from its checkpoint. At the end
both drain what is left (trigger availableNow), and:

- bronze holds every produced event exactly once, the quarantine nothing, and the batches'
  record counts add up to what was produced;
- every derived feature table equals a rebuild from bronze;
- ``churn_scores`` holds each score once; the scores topic holds each of them, at least
  once (its duplicates, from the at-least-once Kafka sink, are counted and printed).
"""

from __future__ import annotations

import os

import pytest

from tests.integration.streaming import (
    assert_nothing_lost_or_doubled,
    kills_under_load,
    scores_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = int(os.environ.get("CHURN_CRASH_KILLS", "2"))


def test_kills_under_load_lose_and_double_nothing(
    kafka_stack, mlflow_stack, base_config, spark, tmp_path
):
    cfg = scores_config(base_config, tmp_path, mlflow_stack.mlflow_uri)
    cfg = cfg.model_copy(
        update={
            "stream_features": cfg.stream_features.model_copy(
                update={"trigger_s": 0.5, "max_offsets_per_trigger": 1000}
            )
        }
    )
    produced, cycles = kills_under_load(
        cfg,
        tmp_path,
        ["features.committed"] * KILLS,
        ["scores.sent", "scores.written"] * (KILLS // 2) + ["scores.sent"] * (KILLS % 2),
    )
    lost_doubled = assert_nothing_lost_or_doubled(spark, cfg, produced, tmp_path)
    print(
        f"\ncrash under load: kills {cycles['stream_features']['kills']} (features) "
        f"{cycles['stream_scores']['kills']} (scorer); {lost_doubled}"
    )
