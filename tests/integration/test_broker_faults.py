"""A Kafka broker killed with SIGKILL while events stream, then brought back: both streaming
jobs ride it out without a restart of their own, and nothing is lost or counted twice
(docs/reliability.md, decision 57).

Each case starts its own cluster on free loopback ports (the session's broker is shared by
other tests): three nodes with replication factor 3 and min.insync.replicas 2, where the
killed node leads the events topic's first partition; and a single broker, where nothing
can be written while it is down. A producer thread sends simulated events (acks=all) the
whole time, also while the broker is down. The jobs run live, then are stopped by SIGTERM
and drained; the end state is checked as after the crash tests.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from infra import stack as local_stack
from infra.kafka_io import client_config, ensure_topics
from tests.conftest import free_ports
from tests.integration.streaming import (
    Traffic,
    assert_nothing_lost_or_doubled,
    batches,
    champion,
    drain,
    scores_config,
    start,
    stop_gracefully,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

quiet = logging.getLogger("tests.broker-faults.admin")
quiet.addHandler(logging.NullHandler())
quiet.propagate = False

JOBS = ("stream_features", "stream_scores")
OUTAGE_EVENTS = 200  # sent while the broker is down


def cluster(base_config, tmp_path, brokers: int) -> local_stack.Stack:
    first = free_ports(2 * brokers)
    s = base_config.local_stack.model_copy(
        update={
            "state_dir": tmp_path / "cluster",
            "brokers": brokers,
            "kafka_port": first,
            "kafka_controller_port": first + brokers,
            "kafka_heap": "384m",
        }
    )
    return local_stack.Stack.from_config(base_config.model_copy(update={"local_stack": s}))


class BatchClock:
    """When a job's batch count went up, sampled every 0.1 s in a thread."""

    def __init__(self, log, job: str) -> None:
        self.times: list[float] = []
        self.stop = threading.Event()
        threading.Thread(target=self._run, args=(log, job), daemon=True).start()

    def _run(self, log, job: str) -> None:
        seen = 0
        while not self.stop.wait(0.1):
            now = batches(log, job)
            if now > seen:
                seen = now
                self.times.append(time.monotonic())

    def longest_wait(self, since: float) -> float:
        """The longest time without a new batch from ``since`` to the latest batch."""
        times = [since, *[t for t in self.times if t > since]]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def replicas(admin: AdminClient, topic: str) -> list[tuple[int, list[int], list[int]]]:
    """(leader, replicas, in-sync replicas) of each partition of ``topic``."""
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    return [(p.leader, sorted(p.replicas), sorted(p.isrs)) for p in meta.partitions.values()]


def min_insync(admin: AdminClient, topic: str) -> str:
    (future,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    return future.result(timeout=10)["min.insync.replicas"].value


@pytest.mark.parametrize("brokers", [3, 1], ids=["3-brokers-kill-leader", "1-broker-restart"])
def test_broker_killed_mid_stream_loses_and_doubles_nothing(
    brokers, mlflow_stack, base_config, spark, tmp_path
):
    stack = cluster(base_config, tmp_path, brokers)
    print(local_stack.start_kafka(stack))
    try:
        run_with_a_broker_fault(stack, brokers, mlflow_stack, base_config, spark, tmp_path)
    finally:
        local_stack.stop_kafka(stack)


def run_with_a_broker_fault(stack, brokers, mlflow_stack, base_config, spark, tmp_path) -> None:
    cfg = scores_config(base_config, tmp_path, mlflow_stack.mlflow_uri)
    cfg = cfg.model_copy(
        update={
            "kafka": cfg.kafka.model_copy(update={"bootstrap_servers": stack.bootstrap}),
            "stream_features": cfg.stream_features.model_copy(
                update={"trigger_s": 0.5, "max_offsets_per_trigger": 1000}
            ),
        }
    )
    config = write_config(cfg, tmp_path / "faults.yaml")
    topics = cfg.kafka.topics
    ensure_topics(cfg.kafka, [topics.events, topics.scores, topics.dlq], "admin")
    # Quiet: it outlives the cluster until garbage-collected, and would log each reconnect.
    admin = AdminClient({**client_config(cfg.kafka, "admin"), "logger": quiet})
    # The cluster's defaults decide durability: 3 copies, 2 must have each write.
    for topic in (topics.events, topics.scores, topics.dlq):
        # A topic just created reaches every broker's metadata a moment later.
        wait_for(lambda t=topic: replicas(admin, t), f"{topic}'s partitions", timeout_s=60)
        assert {len(r) for _, r, _ in replicas(admin, topic)} == {min(brokers, 3)}
        assert min_insync(admin, topic) == ("2" if brokers == 3 else "1")
    champion(cfg)

    traffic = Traffic(cfg, rate=80)
    traffic.thread.start()
    logs = {job: tmp_path / f"{job}.log" for job in JOBS}
    procs = {job: start(job, config, logs[job]) for job in JOBS}
    alive = [(procs[job], logs[job]) for job in JOBS]

    def both_run_batches(after: dict[str, int], what: str) -> dict[str, int]:
        wait_for(lambda: all(batches(logs[j], j) >= after[j] + 2 for j in JOBS), what, alive=alive)
        return {j: batches(logs[j], j) for j in JOBS}

    clock = BatchClock(logs["stream_features"], "stream_features")
    try:
        done = both_run_batches(dict.fromkeys(JOBS, 0), "both jobs run batches")
        leader = replicas(admin, topics.events)[0][0]
        victim = next(n for n in stack.kafka_nodes() if n.node_id == leader)
        killed = local_stack.members(stack, victim.service)
        assert killed
        for proc in killed:
            proc.send_signal(signal.SIGKILL)
        sent_at_kill, killed_at = traffic.sent, time.monotonic()
        print(f"killed {victim.service} (leads {topics.events}-0): pids {[p.pid for p in killed]}")
        wait_for(
            lambda: traffic.sent >= sent_at_kill + OUTAGE_EVENTS,
            f"{OUTAGE_EVENTS} events sent while {victim.service} is down",
            alive=alive,
        )
        if brokers > 1:  # two of three in sync: writes and reads go on without the dead one
            done = both_run_batches(done, f"both jobs run batches without {victim.service}")
        outage_sent = traffic.sent - sent_at_kill
        print(local_stack.start_kafka(stack))
        wait_for(
            lambda: all(
                isr == r
                for topic in (topics.events, topics.scores)
                for _, r, isr in replicas(admin, topic)
            ),
            f"{victim.service} back in sync",
            alive=alive,
        )
        both_run_batches(done, "both jobs run batches after the broker came back")
        stall = clock.longest_wait(since=killed_at)
        produced = traffic.finish()
        for job in JOBS:
            stop_gracefully(procs[job], logs[job])
    finally:
        traffic.stop.set()
        clock.stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    drain(cfg, tmp_path, logs)
    summary = assert_nothing_lost_or_doubled(spark, cfg, produced, tmp_path)
    print(
        f"\nbroker fault ({brokers} broker(s)): killed {victim.service} with SIGKILL and "
        f"restarted it; {outage_sent} events sent during the outage; the feature stream's "
        f"longest wait for a batch from the kill on: {stall:.1f}s; {summary}"
    )
