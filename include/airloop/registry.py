"""MLflow tracking and registry access shared by train, promote, score and monitor."""

from __future__ import annotations

import os
from typing import Any

from airloop.config import Settings

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous_champion"


def client(settings: Settings) -> Any:
    """An MlflowClient on the configured tracking/registry URI (the experiment is created if absent)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    if settings.tracking_uri.startswith("sqlite:///"):
        (settings.home / "mlflow").mkdir(parents=True, exist_ok=True)
    c = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    if c.get_experiment_by_name(settings.experiment_name) is None:
        c.create_experiment(settings.experiment_name, artifact_location=settings.artifact_location)
    mlflow.set_experiment(settings.experiment_name)
    return c


def version_by_alias(settings: Settings, alias: str) -> Any | None:
    """The registered model version holding ``alias``, or None when no version holds it."""
    from mlflow.exceptions import MlflowException

    c = client(settings)
    try:
        return c.get_model_version_by_alias(settings.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_model(settings: Settings, version: str) -> Any:
    """Load a registered sklearn model version."""
    import mlflow.sklearn

    client(settings)
    return mlflow.sklearn.load_model(f"models:/{settings.model_name}/{version}")
