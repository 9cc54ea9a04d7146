"""Hostile input at rate: valid traffic with about a quarter of hostile records mixed in,
through the live feature stream (docs/events.md, docs/reliability.md).

The hostile kinds: the contract's table of bad inputs (tests/contract_cases.py: not UTF-8,
not JSON, trailing bytes and concatenated values, duplicate keys, non-finite numbers,
wrong types, unknown schema versions, ids too long or with control and bidirectional
characters, null and mismatched keys), plus what only shows at scale: values of 99% of
the broker's largest message, JSON nested 20,000 deep, an empty key, and timestamps at
the epoch and in the year 2999. Each has the reason it must get.

The stream must keep going, its driver's memory stay bounded, every record be either in
bronze or in the quarantine with the reason it was sent with (reconciled by reason), and
the dead-letter topic hold each quarantined record.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import time
from collections import Counter

import psutil
import pytest
from confluent_kafka import Consumer, Producer

from infra.kafka_io import client_config, ensure_topics, producer_config
from sources.simulator import SimulationConfig, simulate
from store.explore import batches as explore_batches
from store.explore import quarantine_reasons, reconciliation
from store.tables import FeatureStore
from tests.contract_cases import BAD_INPUTS, event, raw
from tests.integration.streaming import (
    start,
    stop_gracefully,
    stream_config,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKER_MAX = 1_048_588  # the broker's message.max.bytes (Kafka's default)
NEAR_MAX = int(BROKER_MAX * 0.99)
HOSTILE_SHARE = 0.23
BATCH_RE = r"stream_features: batch \d+: ([\d,]+) records"


def hostile_kinds() -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, reason) of every hostile kind; ids are made unique where they matter."""
    kinds = [
        (raw(key), raw(value), reason)
        for key, value, reason in BAD_INPUTS
        # The table's oversized case is sized for its own 512-byte limit; its valid rows
        # are not hostile.
        if reason not in (None, "oversized_value")
    ]
    padding = "x" * (NEAR_MAX - len(event()) - 20)
    kinds += [
        (b"u-1", event(padding=padding).encode(), "oversized_value"),
        (b"u-1", b'{"event_id": "e", "extra": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "not_json"),
        (b"", event().encode(), "key_mismatch"),
    ]
    return kinds


def dated(kind: str, n: int) -> tuple[bytes, bytes, str]:
    """An otherwise valid event at the epoch or in 2999, with its own id."""
    when, reason = {
        "past": ("1970-01-01T00:00:00.000Z", "before_earliest_event_time"),
        "future": ("2999-01-01T00:00:00.000Z", "future_event_time"),
    }[kind]
    return b"u-1", event(event_id=f"{kind}-{n}", event_time=when).encode(), reason


def mix(seed: int = 23) -> tuple[list[tuple[bytes | None, bytes | None]], Counter]:
    """Simulated valid events in time order with hostile records spread among them; the
    records, and how many each reason (None: valid) should get."""
    valid = [
        (e["user_id"].encode(), json.dumps(e, separators=(",", ":")).encode())
        for e in sorted(
            simulate(SimulationConfig(n_users=1000, days=60, seed=5)),
            key=lambda e: e["event_time"],
        )
    ]
    n_hostile = int(len(valid) * HOSTILE_SHARE / (1 - HOSTILE_SHARE)) + 1
    kinds, rng = itertools.cycle(hostile_kinds()), random.Random(seed)
    hostile = [
        dated(rng.choice(("past", "future")), n) if n % 10 == 0 else next(kinds)
        for n in range(n_hostile)
    ]
    records: list[tuple[bytes | None, bytes | None]] = list(valid)
    for key, value, _ in hostile:
        records.insert(rng.randrange(len(records) + 1), (key, value))
    expected = Counter({None: len(valid)}) + Counter(reason for _, _, reason in hostile)
    return records, expected


def produce(cfg, records) -> None:
    producer = Producer(producer_config(cfg.kafka, "producer", **{"message.max.bytes": BROKER_MAX}))
    failed: list = []
    for key, value in records:
        while True:
            try:
                producer.produce(
                    cfg.kafka.topics.events,
                    key=key,
                    value=value,
                    on_delivery=lambda err, _msg: err and failed.append(err),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert not failed, failed[:3]


def memory(proc: psutil.Process) -> dict[str, int]:
    """The memory of a job's driver in bytes: its Python process, the JVM under it, and the
    JVM's Python workers (the validator's slow path). Proportional set sizes: the workers
    are forks sharing pages, which resident sizes would count once per worker."""
    found = {"python": 0, "jvm": 0, "workers": 0}
    with contextlib.suppress(psutil.NoSuchProcess):
        found["python"] = proc.memory_full_info().pss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                kind = "jvm" if child.name() == "java" else "workers"
                found[kind] += child.memory_full_info().pss
    return found


def dead_letters(cfg, at_least: int) -> int:
    consumer = Consumer(
        {
            **client_config(cfg.kafka, "admin"),
            "group.id": f"dlq-{cfg.kafka.topics.dlq}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([cfg.kafka.topics.dlq])
    seen, deadline = 0, time.monotonic() + 120
    while seen < at_least and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            seen += 1
    consumer.close()
    return seen


def test_a_hostile_mix_at_rate_is_reconciled_by_reason(kafka_stack, base_config, spark, tmp_path):
    cfg = stream_config(base_config, tmp_path, "hostile")
    cfg = cfg.model_copy(
        update={
            "stream_features": cfg.stream_features.model_copy(
                update={"max_value_bytes": 65_536, "max_offsets_per_trigger": 10_000}
            )
        }
    )
    config = write_config(cfg, tmp_path / "hostile.yaml")
    records, expected = mix()
    hostile = sum(n for reason, n in expected.items() if reason)
    assert hostile / len(records) >= 0.2
    ensure_topics(cfg.kafka, [cfg.kafka.topics.events, cfg.kafka.topics.dlq], "admin")

    log = tmp_path / "stream_features.log"
    job = start("stream_features", config, log)
    proc, samples = psutil.Process(job.pid), []
    try:
        started = time.monotonic()
        produce(cfg, records)
        produced_s = time.monotonic() - started

        def consumed() -> int:
            text = log.read_text(errors="replace")
            done = sum(int(n.replace(",", "")) for n in re.findall(BATCH_RE, text))
            samples.append((done, memory(proc)))
            return done

        wait_for(
            lambda: consumed() >= len(records),
            "the stream consumed every record",
            timeout_s=900,
            alive=[(job, log)],
        )
        stream_s = time.monotonic() - started
        stop_gracefully(job, log)
    finally:
        if job.poll() is None:
            job.kill()

    store = FeatureStore(cfg.storage.warehouse)
    totals = reconciliation(spark, store)
    assert totals["records"] == totals["valid"] + totals["quarantined"] == len(records)
    assert totals["events_table_rows"] == totals["valid"] == expected[None]
    assert totals["quarantine_table_rows"] == totals["quarantined"]
    reasons = quarantine_reasons(spark, store)
    by_reason = Counter(dict(zip(reasons["reject_reason"], reasons["records"], strict=True)))
    assert by_reason == expected - Counter({None: expected[None]})
    n_batches = len(explore_batches(spark, store))
    assert dead_letters(cfg, totals["quarantined"]) == totals["quarantined"]

    # Peak memory by process while the first and the second half of the records went
    # through: warmed up in the first, it must not grow in the second.
    halves = [
        {k: max((m[k] for d, m in samples if lo <= d < hi), default=0) for k in samples[0][1]}
        for lo, hi in ((0, len(records) / 2), (len(records) / 2, len(records) + 1))
    ]
    mib = {k: [h[k] // 2**20 for h in halves] for k in halves[0]}
    print(
        f"\nhostile at rate: {len(records):,} records ({hostile:,} hostile, "
        f"{hostile / len(records):.0%}) produced in {produced_s:.1f}s, consumed in "
        f"{stream_s:.1f}s over {n_batches} batches; valid {totals['valid']:,} + "
        f"quarantined {totals['quarantined']:,} = produced; by reason "
        f"{dict(sorted(by_reason.items()))}; peak PSS MiB (first half, second half) {mib}, "
        f"{len(samples)} samples"
    )
    for kind, (first, second) in mib.items():
        assert second <= first * 1.2 + 64, f"{kind} grew from {first} to {second} MiB"
    size, unit = cfg.spark.driver_memory[:-1], cfg.spark.driver_memory[-1].lower()
    heap_mib = int(size) * {"m": 1, "g": 1024}[unit]
    assert mib["jvm"][1] < heap_mib + 1536, f"the JVM beyond its {heap_mib} MiB heap + 1.5 GiB"
