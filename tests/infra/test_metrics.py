"""infra.metrics served over HTTP and read back by jobs.status (no Spark, no broker: the
query's progress and the broker's offsets are given as the jobs would read them)."""

from __future__ import annotations

import json
import socket
from datetime import UTC, date, datetime

import pytest

from infra.config import Config, ConfigError
from infra.metrics import FeatureMetrics, ScoreMetrics, delta_lag, kafka_lag, serve, stop
from jobs.status import describe, scrape, screen

KAFKA_PROGRESS = {
    "inputRowsPerSecond": 120.5,
    "processedRowsPerSecond": 300.0,
    "sources": [{"endOffset": json.dumps({"events": {"0": 90, "1": 40}})}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def endpoints():
    started = []

    def start(metrics):
        started.append(serve(metrics, "127.0.0.1", free_port()))
        return metrics, f"http://127.0.0.1:{metrics._server.server_port}/metrics"

    yield start
    for m in started:
        stop(m)


def test_lag_is_the_brokers_end_minus_what_the_query_processed():
    ends = {"events": {0: 100, 1: 40, 2: 7}}
    assert kafka_lag(KAFKA_PROGRESS, ends.__getitem__) == {("events", "0"): 10, ("events", "1"): 0}
    assert kafka_lag(None, ends.__getitem__) == {} and kafka_lag({"sources": []}, dict) == {}

    # Delta: the offset names the next version to read (index -1: none of its files yet).
    def delta(version, index=-1):
        offset = {"reservoirVersion": version, "index": index}
        return {"sources": [{"endOffset": json.dumps(offset)}]}

    def newest(table_newest):
        return lambda start: max(table_newest, start - 1)

    assert delta_lag(delta(8), newest(7)) == 0  # read through 7, newest 7
    assert delta_lag(delta(5), newest(7)) == 3  # 5, 6 and 7 to read
    assert delta_lag(delta(5, 2), newest(7)) == 3  # 5 partly read
    assert delta_lag(None, newest(7)) is None


def test_the_feature_streams_metrics_as_scraped_and_shown(endpoints):
    metrics, url = endpoints(FeatureMetrics())
    metrics.live.clock = lambda: datetime(2024, 3, 7, 12, tzinfo=UTC).timestamp()
    ends = {"events": {0: 100, 1: 40}}
    metrics.watch(lambda: KAFKA_PROGRESS, end_offsets=ends.__getitem__)
    clock = datetime(2024, 3, 6, 10, tzinfo=UTC)
    metrics.batch(0, 120, 2.5, {"parse": 1.0, "write": 1.5})
    metrics.features(100, {"not_json": 15, "key_mismatch": 5}, 30, date(2024, 3, 7), clock)
    metrics.violations({"volume:valid_share": 1}, lambda _check: "warn")
    metrics.batch(1, 10, 1.5, {"parse": 0.5})
    metrics.features(8, {"not_json": 2}, 4, date(2024, 3, 7), clock)

    s = scrape(url)
    assert s.error is None
    assert s.value("churn_batches_total") == 2 and s.value("churn_input_records_total") == 130
    assert s.value("churn_valid_records_total") == 108
    assert s.by("churn_quarantined_records_total", "reason") == {"not_json": 17, "key_mismatch": 5}
    assert s.value("churn_batch_duration_seconds_count") == 2
    assert s.value("churn_batch_duration_seconds_sum") == 4.0
    assert s.by("churn_batch_step_seconds", "step") == {"parse": 0.5}  # the last batch's
    assert s.value("churn_consumer_lag_records", partition="0") == 10
    assert s.value("churn_consumer_lag_records", partition="1") == 0
    assert s.value("churn_input_rows_per_second") == 120.5
    assert s.value("churn_feature_age_seconds") == 12 * 3600  # as_of midnight -> noon
    assert s.value("churn_event_clock_age_seconds") == 26 * 3600
    text = "\n".join(describe("stream_features", s))
    assert "130 in: 108 valid, 22 quarantined (key_mismatch 5, not_json 17)" in text
    assert "lag             10 records (events[0] 10, events[1] 0)" in text
    assert "features as of 12.0 h ago" in text
    assert "data quality    volume:valid_share 1" in text
    assert s.value("churn_dq_violations_total", check="volume:valid_share", severity="warn") == 1


def test_the_scorers_metrics_and_a_job_that_is_down(endpoints):
    metrics, url = endpoints(ScoreMetrics())
    progress = {"sources": [{"endOffset": json.dumps({"reservoirVersion": 4, "index": -1})}]}
    metrics.watch(lambda: progress, newest_version=lambda v: 5)
    metrics.batch(3, 50, 0.8, {"score": 0.3})
    metrics.scored({"low": 30, "high": 5}, 2, 37, "churn-lightgbm", 3)
    metrics.scored({"medium": 4}, 0, 4, "churn-lightgbm", 4)
    s = scrape(url)
    assert s.by("churn_scores_total", "band") == {"low": 30, "high": 5, "medium": 4}
    assert s.value("churn_lapsed_total") == 2 and s.value("churn_emitted_records_total") == 41
    assert s.samples["churn_model_version"] == [
        ({"job": "stream_scores", "model": "churn-lightgbm"}, 4.0)
    ]
    assert s.value("churn_source_lag_versions") == 2
    text = "\n".join(describe("stream_scores", s))
    assert "model           churn-lightgbm v4" in text
    assert "scores          low 30, medium 4, high 5; 2 lapsed; 41 records emitted" in text

    down = free_port()
    cfg = Config.model_validate(
        {
            "monitoring": {
                "metrics_port": {
                    "stream_features": down,
                    "stream_scores": int(url.split(":")[2].split("/")[0]),
                }
            }
        }
    )
    lines, all_up = screen(cfg)
    assert not all_up
    assert any(line.startswith("stream_features  DOWN") for line in lines)
    assert any(line.startswith("stream_scores    up") for line in lines)


def test_both_jobs_on_one_port_is_a_config_error():
    with pytest.raises(ValueError, match="both streaming jobs would serve /metrics on 9108"):
        Config.model_validate({"monitoring": {"metrics_port": {"stream_scores": 9108}}})


def test_a_port_in_use_names_the_key(endpoints):
    _, url = endpoints(FeatureMetrics())
    port = int(url.split(":")[2].split("/")[0])
    with pytest.raises(ConfigError, match=rf"monitoring.metrics_port.stream_features: .*:{port}"):
        serve(FeatureMetrics(), "127.0.0.1", port)
