"""ModelCache rules against an in-memory registry (the MLflow one is in the integration tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import pytest

from features.registry import FEATURE_NAMES
from scoring.model import (
    ModelCache,
    NoModelError,
    SignatureMismatch,
    check_signature,
)
from tests.scoring.models import train

ALIAS = "champion"


@dataclass
class MemoryRegistry:
    """Aliases and versions in dicts; a version is (signature, booster or the error to raise)."""

    aliases: dict[str, int] = field(default_factory=dict)
    versions: dict[int, tuple[list[str] | None, lgb.Booster | Exception]] = field(
        default_factory=dict
    )
    down: bool = False
    error: str = "registry unreachable"
    booster_calls: int = 0
    # The lookback each version's run records (28 unless listed; None: not recorded).
    lookbacks: dict[int, int | None] = field(default_factory=dict)

    def version_at(self, name: str, alias: str) -> int | None:
        if self.down:
            raise ConnectionError(self.error)
        return self.aliases.get(alias)

    def signature(self, name: str, version: int) -> list[str] | None:
        return self.versions[version][0]

    def lookback_days(self, name: str, version: int) -> int | None:
        return self.lookbacks.get(version, 28)

    def booster(self, name: str, version: int) -> lgb.Booster:
        self.booster_calls += 1
        found = self.versions[version][1]
        if isinstance(found, Exception):
            raise found
        return found


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def boosters() -> dict[str, lgb.Booster]:
    return {
        "recency": train("recency", trees=5)[0],
        "sessions": train("sessions", trees=5)[0],
        "short": train("recency", trees=5, names=FEATURE_NAMES[:-1])[0],
    }


@pytest.fixture
def setup(boosters):
    names = list(FEATURE_NAMES)
    registry = MemoryRegistry(
        versions={
            1: (names, boosters["recency"]),
            2: (names, boosters["sessions"]),
            3: ([*names[:-1], "surprise"], boosters["short"]),  # wrong signature
            4: (names, OSError("model.lgb: not a LightGBM model")),  # artifacts do not load
            5: (None, boosters["recency"]),  # logged without a signature
            6: (names, boosters["short"]),  # signature claims 85 inputs, booster takes 84
            7: (names, boosters["recency"]),  # its run records no population
        },
        lookbacks={7: None},
    )
    clock, lines = Clock(), []
    cache = ModelCache(
        registry, "m", ALIAS, FEATURE_NAMES, log=lines.append, clock=clock, retry_failed_s=60
    )
    return registry, cache, clock, lines


def test_loads_the_alias_once_and_swaps_when_it_moves(setup):
    registry, cache, clock, lines = setup
    registry.aliases[ALIAS] = 1
    first = cache.get()
    assert (first.version, first.lookback_days) == (1, 28)
    assert cache.get() is first and registry.booster_calls == 1  # cached
    registry.aliases[ALIAS] = 2
    clock.now += 1
    assert cache.get().version == 2
    assert cache.counters.loads == 2 and cache.counters.resolves == 3
    assert lines == [
        "model: now scoring with m v1 at alias champion (first model)",
        "model: now scoring with m v2 at alias champion (was v1)",
    ]


def test_resolves_at_most_every_resolve_every_s(setup):
    registry, cache, clock, _ = setup
    cache.resolve_every_s = 30
    registry.aliases[ALIAS] = 1
    assert cache.get().version == 1
    registry.aliases[ALIAS] = 2
    clock.now = 29
    assert cache.get().version == 1 and cache.counters.resolves == 1
    clock.now = 30
    assert cache.get().version == 2 and cache.counters.resolves == 2


@pytest.mark.parametrize(
    ("bad", "counter", "message"),
    [
        (3, "signature_mismatches", "m v3 at alias champion rejected, signature does not match"),
        (4, "load_failures", "m v4 at alias champion cannot be loaded: OSError"),
        (5, "signature_mismatches", "the model has no signature"),
        (6, "signature_mismatches", "the booster takes 84 features"),
        (7, "signature_mismatches", "records no training.lookback_days"),
    ],
)
def test_a_bad_version_is_refused_and_the_previous_model_keeps_scoring(
    setup, bad, counter, message
):
    registry, cache, clock, lines = setup
    registry.aliases[ALIAS] = 1
    cache.get()
    registry.aliases[ALIAS] = bad
    for _ in range(3):  # every later batch: refused once, logged once
        clock.now += 1
        assert cache.get().version == 1
    assert getattr(cache.counters, counter) == 1
    assert len(lines) == 2 and message in lines[1] and lines[1].endswith("; keeping m v1")
    assert cache.status() == f"m v1 (alias -> v{bad} not used; " + (
        "load_failures=1 signature_mismatches=0 resolve_failures=0)"
        if counter == "load_failures"
        else "load_failures=0 signature_mismatches=1 resolve_failures=0)"
    )
    registry.aliases[ALIAS] = 2  # the next good champion is taken as usual
    clock.now += 1
    assert cache.get().version == 2 and cache.status().startswith("m v2 (load_failures")


def test_a_version_that_failed_to_load_is_retried_later(setup, boosters):
    registry, cache, clock, _ = setup
    registry.aliases[ALIAS] = 1
    cache.get()
    registry.aliases[ALIAS] = 4
    clock.now = 1
    cache.get()
    registry.versions[4] = (list(FEATURE_NAMES), boosters["sessions"])  # e.g. storage is back
    clock.now = 30
    assert cache.get().version == 1
    clock.now = 61
    assert cache.get().version == 4 and cache.counters.load_failures == 1


def test_registry_errors_and_a_removed_alias_keep_the_model(setup):
    registry, cache, clock, lines = setup
    registry.aliases[ALIAS] = 1
    cache.get()
    registry.down = True
    clock.now = 1
    assert cache.get().version == 1 and cache.counters.resolve_failures == 1
    assert "cannot resolve alias champion of m: ConnectionError" in lines[-1]
    registry.down = False
    del registry.aliases[ALIAS]
    clock.now = 2
    assert cache.get().version == 1
    assert lines[-2:] == [
        "model: the registry answers again (alias champion of m)",
        "model: alias champion of m points nowhere; keeping m v1",
    ]
    clock.now = 3
    assert cache.get().version == 1 and len(lines) == 4  # said once, not at every batch


def test_an_outage_is_said_once_and_its_end_once(setup):
    """Each failed request's message differs (addresses, retry counts): still one line."""
    registry, cache, clock, lines = setup
    registry.aliases[ALIAS] = 1
    cache.get()
    registry.down = True
    for n in range(1, 4):
        registry.error = f"refused #{n}"
        clock.now = n
        assert cache.get().version == 1
    assert cache.counters.resolve_failures == 3
    assert [line for line in lines if "cannot resolve" in line] == [
        "model: cannot resolve alias champion of m: ConnectionError: refused #1; keeping m v1"
    ]
    assert "resolve_failures=3" in cache.status()
    registry.down, registry.aliases[ALIAS] = False, 1
    clock.now = 4
    assert cache.get().version == 1 and cache.problem is None
    clock.now = 5
    cache.get()
    assert lines[1:] == [
        "model: cannot resolve alias champion of m: ConnectionError: refused #1; keeping m v1",
        "model: the registry answers again (alias champion of m)",
    ]


def test_no_model_raises_and_wait_says_so_until_one_appears(setup):
    registry, cache, _, lines = setup
    with pytest.raises(NoModelError, match="no usable model at alias champion of m"):
        cache.get()
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            registry.aliases[ALIAS] = 2

    assert cache.wait(10, sleep=sleep).version == 2
    assert sleeps == [10, 10]
    assert lines == [
        "model: waiting for a model at alias champion of m; checking again in 10s",
        "model: waiting for a model at alias champion of m; checking again in 10s",
        "model: now scoring with m v2 at alias champion (first model)",
    ]


def test_wait_keeps_waiting_past_a_broken_first_champion(setup):
    registry, cache, _, lines = setup
    registry.aliases[ALIAS] = 4

    def sleep(_seconds: float) -> None:
        registry.aliases[ALIAS] = 1

    assert cache.wait(1, sleep=sleep).version == 1
    assert "cannot be loaded" in lines[0] and "no model to score with yet" in lines[0]
    assert "waiting for a model at alias champion of m (m v4" in lines[1]


def test_check_signature_explains_the_difference():
    names = ["a", "b", "c"]
    check_signature(["a", "b", "c"], names)
    with pytest.raises(
        SignatureMismatch, match=r"1 features missing \['c'\], 1 unexpected \['x'\]"
    ):
        check_signature(["a", "b", "x"], names)
    with pytest.raises(SignatureMismatch, match="another order"):
        check_signature(["b", "a", "c"], names)


def test_a_restart_under_a_broken_champion_resumes_with_the_last_model(setup):
    registry, cache, clock, lines = setup
    registry.aliases[ALIAS] = 4
    assert cache.refresh(force=True) is None
    assert cache.resume(1).version == 1
    clock.now += 1
    assert cache.get().version == 1 and cache.counters.load_failures == 1
    assert lines[-1] == (
        "model: resuming with m v1, the model of this scorer's last scores "
        "(m v4 at alias champion cannot be loaded: OSError: model.lgb: not a LightGBM model)"
    )
    assert cache.resume(2).version == 1  # only ever a starting point
