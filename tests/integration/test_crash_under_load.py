"""Both streaming jobs killed with SIGKILL three times each (CHURN_CRASH_KILLS sets another
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
import re
import signal
import threading
from pathlib import Path

import pytest

from infra.kafka_io import ensure_topics
from tests.integration.streaming import (
    Traffic,
    assert_nothing_lost_or_doubled,
    batches,
    champion,
    drain,
    scores_config,
    start,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = int(os.environ.get("CHURN_CRASH_KILLS", "3"))
KILLED = re.compile(r"CHURN_FAULT: SIGKILL at [\w.]+ in batch (\d+)")


def kill_cycles(
    job: str, points: list[str], config: Path, log: Path, out: dict, *, then_live: bool = False
) -> None:
    """Run ``job`` until it kills itself at each point in turn, one batch further each time;
    then, with ``then_live``, start it once more without a fault (``out["live"]``)."""
    at, proc = 1, None
    try:
        for point in points:
            seen = len(KILLED.findall(log.read_text(errors="replace"))) if log.exists() else 0
            proc = start(job, config, log, fault=f"{point}@{at}")
            rc = proc.wait(600)
            assert rc == -signal.SIGKILL, f"{job} exited {rc}: {log.read_text()[-3000:]}"
            killed = [int(n) for n in KILLED.findall(log.read_text(errors="replace"))]
            assert len(killed) == seen + 1, f"{job} died, but not at its fault point"
            out.setdefault("kills", []).append((point, killed[-1]))
            at = killed[-1] + 1
        if then_live:
            out["live_from"] = batches(log, job)
            out["live"] = start(job, config, log)
    except BaseException as exc:  # surfaced by the main thread
        out["error"] = exc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


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
    config = write_config(cfg, tmp_path / "crash.yaml")
    ensure_topics(cfg.kafka, [cfg.kafka.topics.events, cfg.kafka.topics.scores], "admin")
    champion(cfg)

    traffic = Traffic(cfg, rate=80)
    traffic.thread.start()
    features_log, scores_log = tmp_path / "features.log", tmp_path / "scores.log"
    cycles: dict[str, dict] = {"stream_features": {}, "stream_scores": {}}
    # The scorer scores feature commits: after its kills the feature stream runs on, live.
    feature_kills = threading.Thread(
        target=kill_cycles,
        args=("stream_features", ["features.committed"] * KILLS, config, features_log),
        kwargs={"out": cycles["stream_features"], "then_live": True},
        daemon=True,
    )
    feature_kills.start()
    try:
        kill_cycles(
            "stream_scores",
            ["scores.sent", "scores.written"] * (KILLS // 2) + ["scores.sent"] * (KILLS % 2),
            config,
            scores_log,
            cycles["stream_scores"],
        )
        feature_kills.join(900)
        assert not feature_kills.is_alive() and "error" not in cycles["stream_features"], cycles
        assert "error" not in cycles["stream_scores"], cycles["stream_scores"]["error"]
        # Stopped by SIGTERM once it runs batches (before, the signal would find no handler).
        done = cycles["stream_features"]["live_from"]
        wait_for(
            lambda: batches(features_log, "stream_features") > done,
            "the live feature stream runs a batch",
            alive=[(cycles["stream_features"]["live"], features_log)],
        )
    finally:
        traffic.stop.set()
        traffic.thread.join(120)
        live = cycles["stream_features"].get("live")
        if live is not None:
            live.send_signal(signal.SIGTERM)
            try:
                live.wait(120)
            finally:
                if live.poll() is None:
                    os.killpg(live.pid, signal.SIGKILL)
    assert live is not None and live.returncode == 0, features_log.read_text()[-3000:]
    produced = traffic.finish()
    # Drain: whatever arrived after the last kill, through both jobs, in large batches.
    drain(cfg, tmp_path, {"stream_features": features_log, "stream_scores": scores_log})
    lost_doubled = assert_nothing_lost_or_doubled(spark, cfg, produced, tmp_path)
    print(
        f"\ncrash under load: kills {cycles['stream_features']['kills']} (features) "
        f"{cycles['stream_scores']['kills']} (scorer); {lost_doubled}"
    )
