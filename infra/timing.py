"""Per-step timing for the progress line each micro-batch prints (feature stream, scorer)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StepTimes:
    """A base for a pass's result: the seconds each named step took, in the order they ran."""

    step_seconds: dict[str, float] = field(default_factory=dict, kw_only=True)

    def step(self, name: str, since: float) -> float:
        """Record the time a step took since ``since``; returns now (for the next step)."""
        now = time.monotonic()
        self.step_seconds[name] = round(now - since, 2)
        return now

    def steps_text(self) -> str:
        """``read=0.4 score=1.2 ...`` for progress lines."""
        return " ".join(f"{k}={v:.1f}" for k, v in self.step_seconds.items())
