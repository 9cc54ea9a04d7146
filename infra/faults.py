"""Fault injection for the crash tests: a job kills itself with SIGKILL at a named point.

``CHURN_FAULT=<point>@<batch>``, e.g. ``CHURN_FAULT=scores.written@2``: the first time the
job reaches ``<point>`` in a micro-batch whose id is at least ``<batch>``, it writes one line
on stderr and sends SIGKILL to its process group, its JVM included, as ``kill -9`` of the
job would. The kill lands in the window the point names, however fast or slow the batch
runs; a test that killed "about now" with a timer could miss it (docs/decisions.md 52).
Unset, :func:`reached` costs one lookup in the environment.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "CHURN_FAULT"
POINTS = {
    "features.committed": "every table of a feature batch committed to Delta; the query's "
    "checkpoint commit still to come",
    "scores.sent": "a batch's scores on the Kafka topic; their Delta append still to come",
    "scores.written": "a batch's scores on the topic and in churn_scores; the query's "
    "checkpoint commit still to come",
}


def reached(point: str, batch_id: int) -> None:
    """Kill the job here if ``CHURN_FAULT`` names this point and a batch id at most this one."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, at = spec.partition("@")
    if name not in POINTS or not at.isdigit():
        raise ValueError(f"{ENV}={spec!r}: expected <point>@<batch id>, a point of {list(POINTS)}")
    if name == point and batch_id >= int(at):
        print(f"{ENV}: SIGKILL at {point} in batch {batch_id}", file=sys.stderr, flush=True)
        os.killpg(os.getpgrp(), signal.SIGKILL)
