"""Configuration and usage errors: one message naming the job, exit status 2, no traceback
(docs/decisions.md 50). Each job runs as its own process, as a user or a scheduler runs it;
none gets as far as starting Spark or reaching a broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from infra.cli import Unreachable, run
from infra.config import REPO_ROOT, load_config
from infra.kafka_io import ensure_topics

# Each job's command line, with what it needs to get as far as loading its config; CONFIG
# marks where "--config <path>" goes.
JOBS = {
    "stream_features": ["-m", "jobs.stream_features", "CONFIG"],
    "stream_scores": ["-m", "jobs.stream_scores", "CONFIG"],
    "train": ["-m", "jobs.train", "CONFIG"],
    "schedule_train": ["-m", "jobs.schedule_train", "--once", "CONFIG"],
    "score_batch": ["-m", "jobs.score_batch", "CONFIG"],
    "drift": ["-m", "jobs.drift", "CONFIG"],
    "realised": ["-m", "jobs.realised", "CONFIG"],
    "backfill": ["-m", "jobs.backfill_features", "CONFIG"],
    "demo": ["-m", "jobs.demo", "CONFIG"],
    "simulate": ["-m", "jobs.simulate", "CONFIG"],
    "replay": ["-m", "jobs.replay", "some.csv", "CONFIG"],
    "churn-stack": ["-m", "infra.stack", "CONFIG", "status"],  # its options come first
}


def command(job: str, config: str = "local") -> list[str]:
    return [a for arg in JOBS[job] for a in (["--config", config] if arg == "CONFIG" else [arg])]


def run_job(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        # The session's own overrides (the tests' ports, paths) stay out of it.
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CHURN")}, **env},
        timeout=120,
    )


@pytest.mark.parametrize("job", JOBS)
def test_a_missing_config_file_is_one_line_and_status_2(job, tmp_path):
    missing = tmp_path / "nope.yaml"
    done = run_job(command(job, str(missing)))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"{job}: config file not found: {missing}"]


def test_a_bad_value_names_its_key():
    done = run_job(command("stream_features"), CHURN__SPARK__SHUFFLE_PARTITIONS="many")
    assert done.returncode == 2, done.stderr
    first, *keys = done.stderr.splitlines()  # one line per wrong key under the first
    assert first.startswith("stream_features: invalid config") and "Traceback" not in done.stderr
    assert len(keys) == 1 and "spark.shuffle_partitions" in keys[0] and "'many'" in keys[0]


def test_debug_shows_the_traceback(tmp_path):
    done = run_job([*command("train", str(tmp_path / "nope.yaml")), "--debug"])
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ConfigError: config file not found" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "jobs.replay", "some.csv"], "replay: without --preset, give at least --user-id"),
        (
            ["-m", "jobs.backfill_features", "--preset", "online-retail"],
            "backfill: --preset and the column options describe a --log; give one",
        ),
        (
            ["-m", "jobs.backfill_features", "--batch-records", "0"],
            "backfill: --batch-records must be at least 1, not 0",
        ),
    ],
    ids=["replay-mapping", "backfill-preset-without-log", "backfill-batch-records"],
)
def test_contradicting_arguments_are_one_line_and_status_2(args, message):
    done = run_job(args)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(message)


def test_an_unknown_option_is_argparses_usage_and_status_2():
    done = run_job(["-m", "jobs.train", "--no-such-option"])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "unrecognized arguments: --no-such-option" in done.stderr


def test_a_broker_that_does_not_answer_is_one_line_and_status_1(capsys):
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kafka = load_config("local").kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"})

    def main(_argv: list[str] | None) -> int:
        ensure_topics(kafka, ["t"], "admin", timeout_s=3)
        return 0

    with pytest.raises(SystemExit) as exited:
        run(main, "stream_features", [])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        f"stream_features: no Kafka broker answers at 127.0.0.1:{port} (Failed to get "
        "metadata: Local: Broker transport failure; "
    ), err
    assert f"Connect to ipv4#127.0.0.1:{port} failed: Connection refused" in err  # what it met
    assert err.endswith("); is the stack up (`make up`, `make status`)?"), err
    with pytest.raises(Unreachable):
        run(main, "stream_features", ["--debug"])
