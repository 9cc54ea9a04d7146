"""Guarded and scheduled training: never two at once, skip when no new data arrived.

- One lock file (fcntl.flock, non-blocking) under the state dir: a training started while
  another runs, from the scheduler or by hand (jobs/train.py), is skipped, not queued.
  The kernel drops the lock when its process dies, so a crash never leaves it stuck.
- "New data" is a new Delta version of the daily table. The version of the last successful
  training is read from `last_success.json` in the state dir, or, when that file is gone
  (a fresh container), from the newest finished MLflow run on the same table.
- Every decision is one log line with a UTC timestamp.

Library code: the callers pass the version check, the training and the log as callables.
"""

from __future__ import annotations

import fcntl
import json
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from croniter import croniter

LOCK_FILE = "train.lock"
STATE_FILE = "last_success.json"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Busy(RuntimeError):
    """Another training holds the lock."""


@contextmanager
def exclusive(state_dir: Path) -> Iterator[None]:
    """Hold the training lock for the block, or raise Busy at once if another process has it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise Busy(f"another training holds {path} (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The last successful training's record, or None."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Replace the record atomically (a crash leaves the old one or the new one)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")
    os.replace(tmp, state_dir / STATE_FILE)


@dataclass(frozen=True)
class Decision:
    """What one tick did: train (and how it went), skip (and why) or failed."""

    at: datetime
    action: str  # "trained" | "skipped" | "failed"
    reason: str
    table_version: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.at.strftime('%Y-%m-%dT%H:%M:%SZ')} {self.action}: {self.reason}"


def run_guarded(
    state_dir: Path,
    *,
    current_version: Callable[[], int | None],
    train: Callable[[int], dict[str, Any]],
    last_version_fallback: Callable[[], int | None] = lambda: None,
    skip_unchanged: bool = True,
    log: Callable[[str], None] = print,
    clock: Callable[[], datetime] = utcnow,
) -> Decision:
    """One guarded training: lock, check the table version, train, record success.

    current_version() gives the daily table's Delta version (None: no table yet); train(v)
    trains on version v and returns a JSON-friendly summary.
    """

    def done(
        action: str, reason: str, version: int | None = None, summary: dict[str, Any] | None = None
    ) -> Decision:
        decision = Decision(clock(), action, reason, version, dict(summary or {}))
        log(decision.line())
        return decision

    try:
        with exclusive(state_dir):
            version = current_version()
            if version is None:
                return done("skipped", "no daily table yet")
            state = read_state(state_dir)
            last = state.get("table_version") if state else last_version_fallback()
            if skip_unchanged and last is not None and int(last) == version:
                return done(
                    "skipped", f"no new data: table version {version} already trained", version
                )
            log(
                f"{clock().strftime('%Y-%m-%dT%H:%M:%SZ')} training: table version {version} "
                f"(last trained: {'none' if last is None else last})"
            )
            try:
                summary = train(version)
            except Exception as exc:
                log(traceback.format_exc().rstrip())
                return done("failed", f"{type(exc).__name__}: {exc}", version)
            write_state(
                state_dir, {"table_version": version, "finished_at": clock().isoformat(), **summary}
            )
            what = summary.get("model", "?")
            verdict = "promoted" if summary.get("promoted") else "not promoted"
            return done(
                "trained", f"table version {version} -> {what}, {verdict}", version, summary
            )
    except Busy as exc:
        return done("skipped", str(exc))


def next_fire(cron: str, after: datetime) -> datetime:
    """The first time strictly after `after` that matches the cron expression (UTC)."""
    return croniter(cron, after).get_next(datetime)


def run_schedule(
    cron: str,
    tick: Callable[[], Decision],
    *,
    max_runs: int | None = None,
    log: Callable[[str], None] = print,
    now: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] | None = None,
) -> list[Decision]:
    """Run `tick` at each cron time, forever or max_runs times. Ticks never overlap: the
    next time is computed after a tick returns, and fire times missed meanwhile are logged
    and not replayed."""
    import time

    pause = sleep or time.sleep
    decisions: list[Decision] = []
    fire = next_fire(cron, now())
    while max_runs is None or len(decisions) < max_runs:
        log(f"{now().strftime('%Y-%m-%dT%H:%M:%SZ')} next training check at {fire.isoformat()}")
        while (delay := (fire - now()).total_seconds()) > 0:
            pause(min(delay, 60.0))
        decisions.append(tick())
        after = now()
        upcoming, missed = next_fire(cron, fire), 0
        while upcoming <= after:
            upcoming, missed = next_fire(cron, upcoming), missed + 1
        if missed:
            log(
                f"{after.strftime('%Y-%m-%dT%H:%M:%SZ')} skipped {missed} fire time(s) "
                "while the previous run was busy"
            )
        fire = upcoming
    return decisions
