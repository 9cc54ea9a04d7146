"""Stream health as Prometheus metrics: what each streaming job serves on /metrics.

One :class:`StreamMetrics` per job, in its own registry (two jobs in one process, as in the
tests, never share a series). The jobs feed it after every micro-batch
(:meth:`StreamMetrics.batch`, :meth:`~StreamMetrics.features`, :meth:`~StreamMetrics.scores`);
what changes between batches is read when scraped: the query's last progress (rates), the
consumer lag (the broker's end offsets against the offsets the query has processed, per
partition, or the feature table's newest version against the scorer's), and the freshness
ages against the wall clock. Every name starts with ``churn_`` (docs/operations.md lists
them); ``python -m jobs.status`` reads the same endpoints for a person.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from infra.config import ConfigError

# What a scrape asks of the broker: end offsets per partition of a topic.
EndOffsets = Callable[[str], Mapping[int, int]]
Progress = Callable[[], Mapping[str, Any] | None]
# The newest version of the table a Delta source reads, looked for from a version on.
NewestVersion = Callable[[int], int]

BATCH_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)


def _epoch(value: datetime | date) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()


def kafka_lag(progress: Mapping[str, Any] | None, end_offsets: EndOffsets) -> dict:
    """{(topic, partition): records behind} from the last progress's processed offsets."""
    if not progress or not progress.get("sources"):
        return {}
    done = progress["sources"][0].get("endOffset")
    done = json.loads(done) if isinstance(done, str) else done
    lag = {}
    for topic, parts in (done or {}).items():
        ends = end_offsets(topic)
        for part, offset in parts.items():
            if int(part) in ends:
                lag[(topic, str(part))] = max(0, ends[int(part)] - int(offset))
    return lag


def delta_lag(progress: Mapping[str, Any] | None, newest: NewestVersion) -> int | None:
    """Table versions the query has still to read. A Delta source's offset names the next
    version to read (``{"reservoirVersion": 8, "index": -1}`` once 7 is done, or 8 partly
    read), so versions from there to the table's newest are pending."""
    if not progress or not progress.get("sources"):
        return None
    done = progress["sources"][0].get("endOffset")
    done = json.loads(done) if isinstance(done, str) else done
    if not done or "reservoirVersion" not in done:
        return None
    following = int(done["reservoirVersion"])
    return max(0, newest(following) - following + 1)


@dataclass(eq=False)  # hashable by identity: a registry keys its collectors
class _Live(Collector):
    """Series computed at scrape time from the query and the clock."""

    job: str
    progress: Progress | None = None
    end_offsets: EndOffsets | None = None
    newest_version: NewestVersion | None = None
    stamps: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.time

    def collect(self) -> Iterable[GaugeMetricFamily]:
        last = self.progress() if self.progress else None
        rates = GaugeMetricFamily(
            "churn_input_rows_per_second", "Input rate of the last micro-batch", labels=["job"]
        )
        processed = GaugeMetricFamily(
            "churn_processed_rows_per_second",
            "Processing rate of the last micro-batch",
            labels=["job"],
        )
        if last:
            rates.add_metric([self.job], float(last.get("inputRowsPerSecond") or 0.0))
            processed.add_metric([self.job], float(last.get("processedRowsPerSecond") or 0.0))
        yield rates
        yield processed
        lag = GaugeMetricFamily(
            "churn_consumer_lag_records",
            "Records in the broker not yet processed by the query, per partition",
            labels=["job", "topic", "partition"],
        )
        if self.end_offsets is not None:
            for (topic, part), behind in sorted(kafka_lag(last, self.end_offsets).items()):
                lag.add_metric([self.job, topic, part], behind)
        yield lag
        versions = GaugeMetricFamily(
            "churn_source_lag_versions",
            "Delta table versions the query has not read yet",
            labels=["job"],
        )
        behind = delta_lag(last, self.newest_version) if self.newest_version else None
        if behind is not None:
            versions.add_metric([self.job], behind)
        yield versions
        now = self.clock()
        for name, (help_text, stamp) in {
            "churn_feature_age_seconds": (
                "Wall clock minus the newest features' as_of (midnight UTC)",
                self.stamps.get("as_of"),
            ),
            "churn_event_clock_age_seconds": (
                "Wall clock minus the newest event time processed",
                self.stamps.get("clock"),
            ),
            "churn_last_batch_age_seconds": (
                "Seconds since the last micro-batch finished",
                self.stamps.get("batch"),
            ),
        }.items():
            family = GaugeMetricFamily(name, help_text, labels=["job"])
            if stamp is not None:
                family.add_metric([self.job], now - stamp)
            yield family


class StreamMetrics:
    """The metrics of one streaming job (``job`` = its query name)."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.registry = CollectorRegistry()
        r, j = self.registry, ["job"]
        self.live = _Live(job)
        r.register(self.live)
        self.batches = Counter("churn_batches", "Micro-batches completed", j, registry=r)
        self.records = Counter(
            "churn_input_records", "Records in the completed micro-batches", j, registry=r
        )
        self.duration = Histogram(
            "churn_batch_duration_seconds",
            "Duration of each micro-batch",
            j,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.steps = Gauge(
            "churn_batch_step_seconds",
            "Seconds each step of the last micro-batch took",
            ["job", "step"],
            registry=r,
        )
        self.last_batch = Gauge(
            "churn_last_batch_id", "Id of the last micro-batch completed", j, registry=r
        )
        self._server: Any = None

    # -- fed by the jobs ---------------------------------------------------------------

    def watch(
        self,
        progress: Progress,
        *,
        end_offsets: EndOffsets | None = None,
        newest_version: NewestVersion | None = None,
    ) -> None:
        """Read rates and lag from ``progress`` (the query's lastProgress) at each scrape:
        against the broker's ``end_offsets`` (a Kafka source, lag per partition) or the
        table's ``newest_version`` (a Delta source)."""
        live = self.live
        live.progress, live.end_offsets, live.newest_version = progress, end_offsets, newest_version

    def batch(
        self, batch_id: int, records: int, seconds: float, steps: Mapping[str, float]
    ) -> None:
        """A micro-batch finished (skipped replays count as batches of 0 records)."""
        labels = {"job": self.job}
        self.batches.labels(**labels).inc()
        self.records.labels(**labels).inc(records)
        self.duration.labels(**labels).observe(seconds)
        self.steps.clear()
        for step, s in steps.items():
            self.steps.labels(job=self.job, step=step).set(s)
        self.last_batch.labels(**labels).set(batch_id)
        self.live.stamps["batch"] = self.live.clock()


class FeatureMetrics(StreamMetrics):
    """The feature stream's: quarantined records by reason, users updated, freshness."""

    def __init__(self, job: str = "stream_features") -> None:
        super().__init__(job)
        r = self.registry
        self.valid = Counter("churn_valid_records", "Records that passed", ["job"], registry=r)
        self.quarantined = Counter(
            "churn_quarantined_records",
            "Records quarantined (and sent to the dead-letter topic), by reason",
            ["job", "reason"],
            registry=r,
        )
        self.users_updated = Counter(
            "churn_feature_vectors", "Feature vectors written", ["job"], registry=r
        )
        self.as_of = Gauge(
            "churn_feature_as_of_timestamp_seconds",
            "The newest features' as_of (midnight UTC), as a Unix time",
            ["job"],
            registry=r,
        )
        self.dq = Counter(
            "churn_dq_violations",
            "Data-quality expectations broken, by check and severity (features.expectations)",
            ["job", "check", "severity"],
            registry=r,
        )
        self.clock = Gauge(
            "churn_event_clock_timestamp_seconds",
            "The newest event time processed, as a Unix time",
            ["job"],
            registry=r,
        )

    def features(
        self,
        valid: int,
        reasons: Mapping[str, int],
        users_updated: int,
        as_of: date | None,
        clock: datetime | None,
    ) -> None:
        """What a feature batch did (store.ingest.BatchResult's counts)."""
        self.valid.labels(job=self.job).inc(valid)
        for reason, n in reasons.items():
            self.quarantined.labels(job=self.job, reason=reason).inc(n)
        self.users_updated.labels(job=self.job).inc(users_updated)
        if as_of is not None:
            self.as_of.labels(job=self.job).set(_epoch(as_of))
            self.live.stamps["as_of"] = _epoch(as_of)
        if clock is not None:
            self.clock.labels(job=self.job).set(_epoch(clock))
            self.live.stamps["clock"] = _epoch(clock)

    def violations(self, found: Mapping[str, int], severity: Callable[[str], str]) -> None:
        """A batch's data-quality violations (check -> count) and each check's severity."""
        for check, n in found.items():
            self.dq.labels(job=self.job, check=check, severity=severity(check)).inc(n)


class ScoreMetrics(StreamMetrics):
    """The scorer's: records by band and status, emitted records, the model in use."""

    def __init__(self, job: str = "stream_scores") -> None:
        super().__init__(job)
        r = self.registry
        self.scores = Counter(
            "churn_scores", "Users scored, by risk band", ["job", "band"], registry=r
        )
        self.lapsed = Counter(
            "churn_lapsed",
            "Users who left the model's population (lapsed records)",
            ["job"],
            registry=r,
        )
        self.emitted = Counter(
            "churn_emitted_records", "Records written to the table and topic", ["job"], registry=r
        )
        self.model = Gauge(
            "churn_model_version",
            "The registered model version scoring now",
            ["job", "model"],
            registry=r,
        )

    def scored(
        self, by_band: Mapping[str, int], lapsed: int, emitted: int, model: str, version: int
    ) -> None:
        """What a scoring pass did (scoring.runner.PassResult's counts)."""
        for band, n in by_band.items():
            self.scores.labels(job=self.job, band=band).inc(n)
        self.lapsed.labels(job=self.job).inc(lapsed)
        self.emitted.labels(job=self.job).inc(emitted)
        self.model.clear()
        self.model.labels(job=self.job, model=model).set(version)


M = TypeVar("M", bound=StreamMetrics)


def serve(metrics: M, host: str, port: int) -> M:
    """Serve ``metrics`` on http://host:port/metrics from a daemon thread (port 0: not).
    A port in use stops the job (ConfigError naming the key): a second copy of a job, or
    another program, must not leave a scraper reading the wrong process."""
    if port:
        try:
            metrics._server, _ = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(
                f"monitoring.metrics_port.{metrics.job}: cannot serve /metrics on "
                f"{host}:{port} ({exc.strerror or exc}); choose another port, or 0 for none"
            ) from None
    return metrics


def stop(metrics: StreamMetrics) -> None:
    """Close the endpoint (tests start several in one process)."""
    if metrics._server is not None:
        metrics._server.shutdown()
        metrics._server.server_close()
        metrics._server = None
