"""The champion/challenger gate as a pure decision (the registry calls live in registry.py).

A challenger is promoted when it passes every absolute floor and, when a champion exists,
its gate metric on the same test rows is >= the champion's + min_improvement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class GateDecision:
    """The outcome and the reason recorded on the model version and the run."""

    promote: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None = None
    champion_version: str | None = None

    def tags(self) -> dict[str, str]:
        tags = {
            "gate.decision": "promoted" if self.promote else "rejected",
            "gate.reason": self.reason,
            "gate.metric": self.metric,
            "gate.challenger_value": f"{self.challenger:.6f}",
        }
        if self.champion is not None:
            tags["gate.champion_value"] = f"{self.champion:.6f}"
        if self.champion_version is not None:
            tags["gate.champion_version"] = self.champion_version
        return tags


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    metric: str,
    min_improvement: float,
    floors: Mapping[str, float],
    champion_version: str | None = None,
    champion_failing: str = "",
) -> GateDecision:
    """Promote or not, and why. Metrics are higher-is-better; both dicts are on the same rows.

    ``champion_failing`` says the champion fell under a floor in production (jobs.realised):
    the reason starts with it, and the margin is waived (a challenger that passes the
    floors and is at least as good on the same rows replaces a failing champion).
    """
    decision = _decide(
        challenger,
        champion,
        metric=metric,
        min_improvement=0.0 if champion_failing else min_improvement,
        floors=floors,
        champion_version=champion_version,
    )
    if not champion_failing:
        return decision
    margin = " (margin waived)" if min_improvement and decision.champion is not None else ""
    reason = f"the champion failed in production ({champion_failing}){margin}; {decision.reason}"
    return replace(decision, reason=reason)


def _decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    metric: str,
    min_improvement: float,
    floors: Mapping[str, float],
    champion_version: str | None,
) -> GateDecision:
    value = challenger[metric]
    failed = [
        f"{name} {challenger[name]:.4f} < floor {floor:.4f}"
        for name, floor in sorted(floors.items())
        if not challenger[name] >= floor  # NaN fails too
    ]
    champ = None if champion is None else champion[metric]
    if failed:
        reason = "below floor: " + "; ".join(failed)
        return GateDecision(False, reason, metric, value, champ, champion_version)
    if champ is None:
        reason = f"no champion yet; floors pass ({metric} {value:.4f})"
        return GateDecision(True, reason, metric, value, None, None)
    versus = (
        f"{metric} {value:.4f} vs champion v{champion_version} {champ:.4f} "
        f"+ margin {min_improvement:.4f} on the same test rows"
    )
    promote = value >= champ + min_improvement
    reason = f"{'beats' if promote else 'does not beat'} champion: {versus}"
    return GateDecision(promote, reason, metric, value, champ, champion_version)
