"""Progress output for long training work: what stage, how many rows, how many seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def say(message: str) -> None:
    """One progress line on stdout, flushed (a long stage should not look hung)."""
    # One write per line: stage lines come from several threads (collect_rows).
    sys.stdout.write(f"train: {message}\n")
    sys.stdout.flush()


@contextmanager
def stage(name: str) -> Iterator[dict[str, Any]]:
    """Print a stage's start and its duration; the block may add details to the dict."""
    say(f"{name}...")
    details: dict[str, Any] = {}
    t0 = time.monotonic()
    yield details
    extra = ", ".join(f"{k} {v}" for k, v in details.items())
    say(f"{name} done in {time.monotonic() - t0:.1f}s" + (f" ({extra})" if extra else ""))
