"""MLflow client helpers shared by training and scoring."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from infra.config import MlflowConfig, MlflowRole

# Marks the training experiment as model training, not GenAI, for MLflow's UI and tools
# (MLflow 3.17's UI reads it only when its own layout toggle is off: decision 66).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")

# MLflow retries a failed request 7 times with a doubling backoff: against a server that is
# down, one alias lookup took 247 s. The scorer asks again at its next batch anyway and
# keeps the model it has meanwhile, so it asks once and waits 10 s at most (decision 55).
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def fail_fast() -> None:
    """Make this process's MLflow requests fail fast (FAIL_FAST), unless the environment
    already sets them."""
    for key, value in FAIL_FAST.items():
        os.environ.setdefault(key, value)


def unreachable(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why the tracking server at ``uri`` does not answer its health check, or None when it
    does (or is not a server: a local path, a sqlite file, a Databricks workspace)."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as resp:
            return None if resp.status == 200 else f"/health answered {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"/health answered {exc.code}"
    except OSError as exc:
        return str(getattr(exc, "reason", exc))


@contextmanager
def pointed_at(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (tracking *and* registry) at ``uri`` for the block.

    Both raw settings are restored afterwards, "unset" included. Restoring what
    ``mlflow.get_registry_uri()`` returns instead would pin the registry to a resolved
    default, and a later ``log_model(registered_model_name=...)`` would register the model
    in the wrong store while runs are tracked in the right one.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = previous


_USER_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@contextmanager
def acting_as(mlflow_cfg: MlflowConfig, role: MlflowRole) -> Iterator[None]:
    """MLflow requests in the block authenticate as ``role``'s user (``mlflow.credentials``),
    read from the environment variables the config names; the previous values come back
    afterwards. With no credentials configured for the role, the environment's own apply.

    MLflow reads MLFLOW_TRACKING_USERNAME / _PASSWORD at every request, so this holds for
    every client in the process, threads included: the demo runs its phases one at a time.
    """
    source = mlflow_cfg.credentials.get(role)
    if source is None:
        yield
        return
    user, password = source.read(f"mlflow.credentials.{role}")
    previous = {name: os.environ.get(name) for name in _USER_VARS}
    os.environ.update(zip(_USER_VARS, (user, password.get_secret_value()), strict=True))
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
