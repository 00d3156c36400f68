"""MLflow tracking and registry access shared by train, promote, score and monitor."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from airloop import model as m
from airloop.config import Settings

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous_champion"
CANARY = "canary"  # a version that passed the gate and scores AIRLOOP_CANARY_FRACTION of the entities


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


def _ui_base(settings: Settings) -> str | None:
    """The MLflow UI's address when the tracking URI is a server (http/https), else None."""
    uri = settings.tracking_uri
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def ui_url(settings: Settings, version: str) -> str:
    """Where a person reads a model version in the MLflow UI: the tracking server when there is one,
    else ``make mlflow-ui`` on this home."""
    base = _ui_base(settings) or "http://127.0.0.1:5000"
    return f"{base}/#/models/{settings.registered_model}/versions/{version}"


def artifact_ui_url(settings: Settings, experiment_id: str, run_id: str, path: str) -> str | None:
    """The MLflow UI page that shows a run's artifact (it previews HTML and Markdown) when the tracking URI
    is a server; None otherwise."""
    base = _ui_base(settings)
    return None if base is None else f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{path}"


def artifact_link(settings: Settings, uri: str) -> str:
    """A link a person can open for ``runs:/<run_id>/<path>``: the artifact's MLflow UI page on a tracking
    server, else the URI itself (a file store has no UI address)."""
    if not uri.startswith("runs:/") or _ui_base(settings) is None:
        return uri
    run_id, path = uri.removeprefix("runs:/").split("/", 1)
    experiment_id = client(settings).get_run(run_id).info.experiment_id
    return artifact_ui_url(settings, experiment_id, run_id, path) or uri


def version_by_alias(settings: Settings, alias: str) -> Any | None:
    """The registered model version holding ``alias``, or None when no version holds it."""
    from mlflow.exceptions import MlflowException

    c = client(settings)
    try:
        return c.get_model_version_by_alias(settings.registered_model, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_model(settings: Settings, version: str) -> Any:
    """Load a registered sklearn model version."""
    import mlflow.sklearn

    client(settings)
    return mlflow.sklearn.load_model(f"models:/{settings.registered_model}/{version}")


def training_runs(settings: Settings) -> list[dict[str, Any]]:
    """Every training run of the experiment, oldest first: id, trigger, window and metrics, and the
    model version it registered with the gate's decision (None when it registered none)."""
    c = client(settings)
    exp = c.get_experiment_by_name(settings.experiment_name)
    if exp is None:
        return []
    runs = sorted(c.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)
    versions = {mv.run_id: mv for mv in c.search_model_versions(f"name='{settings.registered_model}'")}
    out = []
    for r in runs:
        if not r.data.params.get(m.PARAM_TRAIN_END):
            continue
        mv = versions.get(r.info.run_id)
        out.append(
            {
                "run_id": r.info.run_id,
                "trigger": r.data.tags.get(m.TAG_TRIGGER) or "manual",
                "causes": [c for c in r.data.tags.get(m.TAG_TRIGGER_CAUSES, "").split(",") if c],
                "trigger_reason": r.data.tags.get(m.TAG_TRIGGER_REASON),
                "trigger_ds": r.data.tags.get(m.TAG_TRIGGER_DS) or None,
                "window": [r.data.params.get(m.PARAM_TRAIN_START), r.data.params.get(m.PARAM_TRAIN_END)],
                "metrics": dict(r.data.metrics),
                "version": str(mv.version) if mv else None,
                "gate": mv.tags.get(m.TAG_GATE_DECISION) if mv else None,
                "gate_reason": mv.tags.get(m.TAG_GATE_REASON) if mv else None,
            }
        )
    return out


def load_holdout(settings: Settings, run_id: str) -> pd.DataFrame:
    """The held-out evaluation rows of a training run (from its MLflow artifacts)."""
    import mlflow.artifacts

    client(settings)
    return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=m.HOLDOUT_ARTIFACT))


def decision_artifact(version: str, ext: str = "json") -> str:
    """Where the gate's decision on ``version`` lives in its training run's artifacts (``json``: the evidence,
    ``txt``: the same in words)."""
    return f"gate/decision_v{version}.{ext}"


def gate_evidence(settings: Settings, run_id: str, version: str) -> dict[str, Any]:
    """The gate's recorded evidence on ``version`` (what approvals, canaries and the model card build on)."""
    import mlflow.artifacts

    client(settings)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=decision_artifact(version))
    return json.loads(Path(local).read_text())
