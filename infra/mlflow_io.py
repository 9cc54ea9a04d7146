"""MLflow client helpers shared by training and scoring."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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
