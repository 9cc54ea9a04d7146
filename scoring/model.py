"""The model the scorer applies: the version behind a registry alias, validated and cached.

:class:`ModelCache` re-resolves the alias (at most every ``resolve_every_s``), loads a new
version once, checks its signature against the feature schema, and keeps the previous
model whenever resolving, loading or the check fails. Every swap and failure is logged in
one line and counted. :class:`MlflowRegistry` is the MLflow side: it takes the tracking URI
as a plain value and never touches MLflow's global state.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import lightgbm as lgb

from scoring.score import ScoringModel

# The run param that holds the training population's lookback (config key training.lookback_days).
LOOKBACK_PARAM = "training.lookback_days"
HORIZON_PARAM = "training.horizon_days"


class NoModelError(RuntimeError):
    """No usable model has been loaded yet (nothing at the alias, or only rejected versions)."""


class SignatureMismatch(ValueError):
    """A model's input signature is not the feature schema the scorer feeds it."""


class Registry(Protocol):
    def version_at(self, name: str, alias: str) -> int | None:
        """The version the alias points to, or None when the model or alias does not exist."""
        ...

    def signature(self, name: str, version: int) -> list[str] | None:
        """The version's signature input names, in order (None: it has no signature)."""
        ...

    def booster(self, name: str, version: int) -> lgb.Booster:
        """The version's LightGBM booster."""
        ...

    def lookback_days(self, name: str, version: int) -> int | None:
        """The eligibility lookback the version was trained with (None: not recorded)."""
        ...


class MlflowRegistry:
    """Aliases and models from an MLflow tracking server / registry."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=self.registry_uri)

    def version_at(self, name: str, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def _download(self, name: str, version: int, dst: str, path: str = "") -> str:
        # The version's own artifact location, resolved with this client: a models:/ URI
        # would be resolved against MLflow's global registry URI, not ours.
        from mlflow.artifacts import download_artifacts

        base = self.client.get_model_version_download_uri(name, str(version))
        return download_artifacts(
            artifact_uri=f"{base.rstrip('/')}/{path}" if path else base,
            dst_path=dst,
            tracking_uri=self.tracking_uri,
        )

    def signature(self, name: str, version: int) -> list[str] | None:
        from mlflow.models import Model

        with tempfile.TemporaryDirectory(prefix="churn-model-") as tmp:
            local = self._download(name, version, tmp, "MLmodel")
            signature = Model.load(local).signature
        return None if signature is None else list(signature.inputs.input_names())

    def training_param(self, name: str, version: int, key: str) -> str | None:
        """A param of the version's training run, which logs its whole config as params
        (training.tracking); None when the run records none."""
        run_id = self.client.get_model_version(name, str(version)).run_id
        return self.client.get_run(run_id).data.params.get(key) if run_id else None

    def lookback_days(self, name: str, version: int) -> int | None:
        value = self.training_param(name, version, LOOKBACK_PARAM)
        return None if value is None else int(value)

    def booster(self, name: str, version: int) -> lgb.Booster:
        import mlflow.lightgbm

        with tempfile.TemporaryDirectory(prefix="churn-model-") as tmp:
            return mlflow.lightgbm.load_model(self._download(name, version, tmp))


def load_model(
    registry: Registry, name: str, version: int, feature_names: Sequence[str]
) -> ScoringModel:
    """Load a version after checking its signature and that it records the population it
    was trained on (SignatureMismatch when either does not fit)."""
    check_signature(registry.signature(name, version), feature_names)
    lookback = registry.lookback_days(name, version)
    if lookback is None:
        raise SignatureMismatch(
            f"its training run records no {LOOKBACK_PARAM}: which users it scores is unknown"
        )
    booster = registry.booster(name, version)
    if booster.num_feature() != len(feature_names):
        raise SignatureMismatch(
            f"the booster takes {booster.num_feature()} features, the schema has "
            f"{len(feature_names)}"
        )
    return ScoringModel(name, version, booster, lookback)


def check_signature(inputs: Sequence[str] | None, expected: Sequence[str]) -> None:
    """Raise SignatureMismatch unless ``inputs`` are exactly ``expected``, in order."""
    if inputs is None:
        raise SignatureMismatch("the model has no signature")
    if list(inputs) == list(expected):
        return
    missing = [n for n in expected if n not in inputs]
    extra = [n for n in inputs if n not in expected]
    if missing or extra:
        raise SignatureMismatch(
            f"{len(missing)} features missing {missing[:3]}, {len(extra)} unexpected {extra[:3]}"
        )
    raise SignatureMismatch("same features in another order")


@dataclass
class CacheCounters:
    resolves: int = 0
    resolve_failures: int = 0
    loads: int = 0
    load_failures: int = 0
    signature_mismatches: int = 0


@dataclass
class ModelCache:
    """The model at ``alias``, cached by version; failures keep the previous model."""

    registry: Registry
    name: str
    alias: str
    feature_names: Sequence[str]
    resolve_every_s: float = 0.0
    # A version that failed to load is tried again after this long (a signature never is).
    retry_failed_s: float = 300.0
    log: Callable[[str], None] = print
    clock: Callable[[], float] = time.monotonic
    current: ScoringModel | None = None
    # Version at the alias when last resolved, and why it is not the current one (if so).
    target: int | None = None
    problem: str | None = None
    counters: CacheCounters = field(default_factory=CacheCounters)
    _resolved_at: float | None = None
    _unresolved: bool = False  # the last resolve failed
    _rejected: dict[int, tuple[float, bool]] = field(default_factory=dict)

    def refresh(self, force: bool = False) -> ScoringModel | None:
        """Resolve the alias (unless resolved less than resolve_every_s ago) and swap to its
        version if it is new, loads and fits the schema. Returns the model to use now."""
        now = self.clock()
        if (
            not force
            and self._resolved_at is not None
            and now - self._resolved_at < self.resolve_every_s
        ):
            return self.current
        self._resolved_at = now
        self.counters.resolves += 1
        try:
            version = self.registry.version_at(self.name, self.alias)
        except Exception as exc:
            self.counters.resolve_failures += 1
            if not self._unresolved:  # said once per outage: its messages differ in details
                self._unresolved = True
                self._fail(f"cannot resolve alias {self.alias} of {self.name}: {_short(exc)}")
            return self.current
        if self._unresolved:
            self._unresolved = False
            self.log(f"model: the registry answers again (alias {self.alias} of {self.name})")
        self.target = version
        if version is None:
            if self.current is not None:
                self._fail(f"alias {self.alias} of {self.name} points nowhere")
            return self.current
        if self.current is not None and version == self.current.version:
            self.problem = None
            return self.current
        if version in self._rejected:
            rejected_at, retry = self._rejected[version]
            if not retry or now - rejected_at < self.retry_failed_s:
                return self.current
        self._load(version, now)
        return self.current

    def _load(self, version: int, now: float) -> None:
        label = f"{self.name} v{version} at alias {self.alias}"
        try:
            model = load_model(self.registry, self.name, version, self.feature_names)
        except SignatureMismatch as exc:
            self.counters.signature_mismatches += 1
            self._rejected[version] = (now, False)
            self._fail(f"{label} rejected, signature does not match the features: {exc}")
            return
        except Exception as exc:
            self.counters.load_failures += 1
            self._rejected[version] = (now, True)
            self._fail(f"{label} cannot be loaded: {_short(exc)}")
            return
        previous = self.current
        self.current = model
        self.counters.loads += 1
        self.problem = None
        self._rejected.pop(version, None)
        was = f"was v{previous.version}" if previous else "first model"
        self.log(f"model: now scoring with {label} ({was})")

    def _fail(self, problem: str) -> None:
        if problem == self.problem:  # said already; the counters keep counting
            return
        self.problem = problem
        keeping = f"keeping {self.current.label}" if self.current else "no model to score with yet"
        self.log(f"model: {problem}; {keeping}")

    def resume(self, version: int) -> ScoringModel | None:
        """Start from ``version`` (the one this scorer's last scores name) when the alias offers
        nothing usable, so a restart with a broken champion keeps the model it had."""
        if self.current is not None:
            return self.current
        try:
            self.current = load_model(self.registry, self.name, version, self.feature_names)
        except Exception as exc:
            self.log(f"model: cannot resume with {self.name} v{version}: {_short(exc)}")
            return None
        self.counters.loads += 1
        self.log(
            f"model: resuming with {self.current.label}, the model of this scorer's last scores"
            + (f" ({self.problem})" if self.problem else "")
        )
        return self.current

    def get(self) -> ScoringModel:
        """The model to score this batch with; NoModelError if none was ever loaded."""
        model = self.refresh()
        if model is None:
            raise NoModelError(
                f"no usable model at alias {self.alias} of {self.name}"
                + (f" ({self.problem})" if self.problem else "")
            )
        return model

    def wait(
        self,
        poll_s: float,
        *,
        timeout_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ScoringModel:
        """Block until a usable model is at the alias, saying so every ``poll_s`` seconds."""
        start = self.clock()
        while True:
            model = self.refresh(force=True)
            if model is not None:
                return model
            if timeout_s is not None and self.clock() - start >= timeout_s:
                raise NoModelError(f"no usable model at alias {self.alias} after {timeout_s}s")
            why = f" ({self.problem})" if self.problem else ""
            self.log(
                f"model: waiting for a model at alias {self.alias} of {self.name}{why}; "
                f"checking again in {poll_s:g}s"
            )
            sleep(poll_s)

    def status(self) -> str:
        """One phrase for progress lines: the model in use and any pending problem."""
        using = self.current.label if self.current else "no model"
        c = self.counters
        tail = []
        if self.target is not None and self.current and self.target != self.current.version:
            tail.append(f"alias -> v{self.target} not used")
        if c.load_failures or c.signature_mismatches or c.resolve_failures:
            tail.append(
                f"load_failures={c.load_failures} signature_mismatches="
                f"{c.signature_mismatches} resolve_failures={c.resolve_failures}"
            )
        return using + (f" ({'; '.join(tail)})" if tail else "")


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
