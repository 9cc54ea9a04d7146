"""The training lock, the skip-when-unchanged rule, the cron loop and the job CLIs."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from training.schedule import (
    Busy,
    exclusive,
    read_state,
    run_guarded,
    run_schedule,
    write_state,
)

T0 = datetime(2024, 1, 1, 1, 0, tzinfo=UTC)


class Clock:
    """A fake wall clock: sleep() advances it; the tests never wait."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def test_lock_is_exclusive_and_released(tmp_path: Path):
    with exclusive(tmp_path), pytest.raises(Busy, match="another training holds"):  # noqa: SIM117
        with exclusive(tmp_path):
            pass
    with exclusive(tmp_path):  # released on exit
        pass


def test_a_training_in_another_process_makes_this_one_skip(tmp_path: Path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from training.schedule import exclusive\n"
            f"with exclusive(Path({str(tmp_path)!r})):\n    print('locked', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        lines: list[str] = []
        d = run_guarded(tmp_path, current_version=lambda: 1, train=lambda v: {}, log=lines.append)
        assert (d.action, d.reason) == (
            "skipped",
            f"another training holds {tmp_path}/train.lock (pid {holder.pid})",
        )
        assert lines == [d.line()]
    finally:
        holder.kill()
        holder.wait()


def test_skip_when_the_table_version_was_already_trained(tmp_path: Path):
    lines: list[str] = []
    trained: list[int] = []

    def train(version: int) -> dict:
        trained.append(version)
        return {"model": f"m/{version}", "promoted": True}

    def tick(version: int | None, **kw) -> str:
        d = run_guarded(
            tmp_path,
            current_version=lambda: version,
            train=train,
            log=lines.append,
            clock=lambda: T0,
            **kw,
        )
        return f"{d.action}: {d.reason}"

    assert tick(None) == "skipped: no daily table yet"
    assert tick(3) == "trained: table version 3 -> m/3, promoted"
    assert read_state(tmp_path) == {
        "table_version": 3,
        "finished_at": T0.isoformat(),
        "model": "m/3",
        "promoted": True,
    }
    assert tick(3) == "skipped: no new data: table version 3 already trained"
    assert tick(3, skip_unchanged=False) == "trained: table version 3 -> m/3, promoted"
    assert tick(4) == "trained: table version 4 -> m/4, promoted"
    assert trained == [3, 3, 4]
    assert lines[0] == "2024-01-01T01:00:00Z skipped: no daily table yet"
    assert "2024-01-01T01:00:00Z training: table version 3 (last trained: none)" in lines


def test_failed_training_is_logged_and_not_recorded(tmp_path: Path):
    write_state(tmp_path, {"table_version": 1})
    lines: list[str] = []

    def boom(version: int) -> dict:
        raise RuntimeError("disk full")

    d = run_guarded(tmp_path, current_version=lambda: 2, train=boom, log=lines.append)
    assert (d.action, d.reason) == ("failed", "RuntimeError: disk full")
    assert read_state(tmp_path) == {"table_version": 1}
    assert any("Traceback" in line for line in lines)


def test_without_a_state_file_the_fallback_version_counts(tmp_path: Path):
    d = run_guarded(
        tmp_path,
        current_version=lambda: 7,
        train=lambda v: {},
        last_version_fallback=lambda: 7,
        log=lambda _: None,
    )
    assert (d.action, d.reason) == ("skipped", "no new data: table version 7 already trained")


def test_cron_loop_runs_at_fire_times_and_never_overlaps():
    clock = Clock(T0)
    lines: list[str] = []
    ticks: list[datetime] = []

    def tick():
        ticks.append(clock.now())
        clock.sleep(30 * 3600 if len(ticks) == 1 else 60)  # the first run takes 30 hours
        return run_guarded_stub(clock.now())

    decisions = run_schedule(
        "0 3 * * *", tick, max_runs=2, log=lines.append, now=clock.now, sleep=clock.sleep
    )
    assert ticks == [datetime(2024, 1, 1, 3, tzinfo=UTC), datetime(2024, 1, 3, 3, tzinfo=UTC)]
    assert len(decisions) == 2
    assert "2024-01-02T09:00:00Z skipped 1 fire time(s) while the previous run was busy" in lines


def run_guarded_stub(at: datetime):
    from training.schedule import Decision

    return Decision(at, "skipped", "stub")


@pytest.mark.parametrize("job", ["jobs.train", "jobs.schedule_train"])
def test_job_help(job: str):
    out = subprocess.run(
        [sys.executable, "-m", job, "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--config" in out and "usage: python -m " + job in out


def test_schedule_rejects_a_bad_cron():
    res = subprocess.run(
        [sys.executable, "-m", "jobs.schedule_train", "--cron", "every day"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "is not a cron expression" in res.stderr
