"""Lineage: from a prediction row back to the model version, training run, data window and raw files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from airloop import lake
from airloop import model as m
from airloop.config import Settings
from airloop.registry import client
from airloop.storage import file_sha256


def batch_lineage(settings: Settings, ds: str) -> dict[str, Any]:
    """The raw and validated files of one day with their content hashes (as recorded at ingestion)."""
    raw = lake.data_file(settings, lake.RAW, ds)
    notes_file = raw.parent / lake.INGEST_FILE
    notes = json.loads(notes_file.read_text()) if notes_file.exists() else {}
    validated = lake.data_file(settings, lake.VALIDATED, ds)
    return {
        "ds": ds,
        "raw": str(raw),
        "raw_sha256": notes.get("sha256") or file_sha256(raw),
        "landing_sources": notes.get("source_sha256", {}),
        "validated": str(validated),
        "validated_sha256": file_sha256(validated) if validated.exists() else None,
    }


def data_lineage(settings: Settings, dates: list[str]) -> list[dict[str, Any]]:
    """Lineage of every day in a training window."""
    return [batch_lineage(settings, d) for d in dates]


def trace_prediction(settings: Settings, ds: str, entity: int | str) -> dict[str, Any]:
    """Walk back from the prediction for ``entity`` on ``ds``: model version, training run, training
    window, feature service, raw batch files with their recorded hashes (and whether they still match)."""
    import mlflow.artifacts

    spec = settings.spec
    path = lake.data_file(settings, lake.PREDICTIONS, ds)
    if not path.exists():
        raise FileNotFoundError(f"no predictions for {ds} at {path}")
    preds = pd.read_parquet(path)
    entity = spec.key(entity)
    row = preds[preds[spec.entity] == entity]
    if row.empty:
        raise ValueError(f"no prediction for {spec.entity}={entity} on {ds}")
    row = row.iloc[0]
    c = client(settings)
    mv = c.get_model_version(row["model_name"], str(row["model_version"]))
    run = c.get_run(mv.run_id)
    if run.info.run_id != row["model_run_id"]:
        raise RuntimeError(f"prediction names run {row['model_run_id']} but version {mv.version} has {mv.run_id}")
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=m.TRAINING_DATA_ARTIFACT)
    training = json.loads(Path(local).read_text())
    for day in training:
        day["raw_intact"] = file_sha256(day["raw"]) == day["raw_sha256"]
    scored = batch_lineage(settings, ds)
    return {
        "prediction": {
            "ds": ds,
            "entity_column": spec.entity,
            spec.entity: entity,
            spec.timestamp: str(row[spec.timestamp]),
            "score": float(row["score"]),
        },
        "model_version": {
            "name": mv.name,
            "version": str(mv.version),
            "uri": f"models:/{mv.name}/{mv.version}",
            "aliases": list(mv.aliases),
            "gate_decision": mv.tags.get(m.TAG_GATE_DECISION),
        },
        "training_run": {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "git_commit": run.data.tags.get(m.TAG_GIT_COMMIT),
            "trigger_reason": run.data.tags.get(m.TAG_TRIGGER_REASON),
            "model_type": run.data.params.get(m.PARAM_MODEL_TYPE),
        },
        "training_window": {
            "start": m.train_window(run)[0],
            "end": m.train_window(run)[1],
            "days": [d["ds"] for d in training],
        },
        "feature_service": run.data.params[m.PARAM_FEATURE_SERVICE],
        "training_data": training,
        "scored_batch": scored,
    }


def render_lineage(chain: dict[str, Any]) -> str:
    """The lineage chain as indented plain text."""
    p, mv, run, win = chain["prediction"], chain["model_version"], chain["training_run"], chain["training_window"]
    key = p["entity_column"]
    lines = [
        f"prediction  {key}={p[key]} on {p['ds']}: score {p['score']:.4f}",
        f"  model     {mv['uri']} aliases={mv['aliases']} gate={mv['gate_decision']}",
        f"  run       {run['run_id']} ({run['model_type']}, git {str(run['git_commit'])[:10]}, "
        f"trigger: {run['trigger_reason']})",
        f"  window    {win['start']}..{win['end']} ({len(win['days'])} validated days), "
        f"feature service {chain['feature_service']}",
    ]
    for d in chain["training_data"]:
        ok = "ok" if d["raw_intact"] else "CHANGED since training"
        lines.append(f"    {d['ds']}  {d['raw']}  sha256 {d['raw_sha256'][:16]}…  {ok}")
    s = chain["scored_batch"]
    lines.append(f"  scored batch {s['raw']} sha256 {s['raw_sha256'][:16]}…")
    for src, h in s["landing_sources"].items():
        lines.append(f"    from {src} sha256 {h[:16]}…")
    return "\n".join(lines)
