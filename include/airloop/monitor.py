"""Monitor: an Evidently drift check of recent days against the champion's training window."""

from __future__ import annotations

import json
import warnings
from datetime import date, timedelta
from typing import Any

from airloop.config import Settings
from airloop.registry import CHAMPION, client, version_by_alias
from airloop.storage import partition_dates, read_partitions, write_json


def drift_report(settings: Settings, reference: Any, current: Any) -> tuple[Any, dict]:
    """Run Evidently's DataDriftPreset; return the snapshot and its key numbers."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    spec = settings.spec
    definition = DataDefinition(numerical_columns=spec.numeric_features, categorical_columns=spec.categorical_features)
    cols = spec.feature_names
    report = Report([DataDriftPreset(drift_share=settings.drift_share_threshold)], include_tests=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = report.run(
            current_data=Dataset.from_pandas(current[cols], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[cols], data_definition=definition),
        )
    numbers: dict[str, Any] = {"columns": {}}
    for m in snapshot.dict()["metrics"]:
        name, cfg, value = m["metric_name"], m.get("config", {}), m["value"]
        if name.startswith("DriftedColumnsCount"):
            numbers["drift_share"] = float(value["share"])
            numbers["drifted_count"] = int(value["count"])
        elif name.startswith("ValueDrift"):
            numbers["columns"][cfg["column"]] = {"score": float(value), "method": cfg.get("method")}
    return snapshot, numbers


def _recent_retrain(settings: Settings, ds: str) -> str | None:
    """trigger_ds of a drift/bootstrap training run inside the cool-down window before ``ds``."""
    c = client(settings)
    exp = c.get_experiment_by_name(settings.experiment_name)
    since = (date.fromisoformat(ds) - timedelta(days=settings.retrain_cooldown_days)).isoformat()
    runs = c.search_runs([exp.experiment_id], filter_string="tags.`airloop.trigger_ds` LIKE '%-%'")
    return max((t for r in runs if since < (t := r.data.tags["airloop.trigger_ds"]) <= ds), default=None)


def check_drift(settings: Settings, ds: str) -> dict:
    """Decide what the loop should do on ``ds``: ``bootstrap`` (no champion yet, enough data),
    ``retrain`` (drift share over threshold), ``cooldown`` (drift, but a retrain is recent),
    ``none`` or ``wait``. Writes ``monitoring/ds=<ds>/result.json`` (+ ``report.html``)."""
    validated_dir = settings.lake_dir / "validated"
    available = [d for d in partition_dates(validated_dir) if d <= ds]
    out_dir = settings.monitoring_dir / f"ds={ds}"
    result: dict[str, Any] = {"ds": ds, "threshold": settings.drift_share_threshold, "drift_share": None}
    champ = version_by_alias(settings, CHAMPION)
    if champ is None:
        enough = len(available) >= settings.min_train_days
        result.update(
            action="bootstrap" if enough else "wait",
            reason=f"no champion yet; {len(available)} validated days "
            f"({'enough' if enough else 'need'} {settings.min_train_days} to train)",
        )
        write_json(result, out_dir / "result.json")
        return result

    run = client(settings).get_run(champ.run_id)
    ref_dates = [d for d in available if run.data.params["train_start"] <= d <= run.data.params["train_end"]]
    cur_dates = [d for d in available[-settings.drift_current_days :] if d > run.data.params["train_end"]]
    result.update(champion_version=str(champ.version), reference=ref_dates, current=cur_dates)
    if not cur_dates or not ref_dates:
        result.update(action="none", reason="no validated days after the champion's training window yet")
        write_json(result, out_dir / "result.json")
        return result
    reference = read_partitions(validated_dir, ref_dates)
    current = read_partitions(validated_dir, cur_dates)
    snapshot, numbers = drift_report(settings, reference, current)
    out_dir.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out_dir / "report.html"))
    result.update(numbers, report=str(out_dir / "report.html"))
    share = numbers["drift_share"]
    if share < settings.drift_share_threshold:
        result.update(action="none", reason=f"drift share {share:.2f} < threshold {settings.drift_share_threshold}")
    elif (recent := _recent_retrain(settings, ds)) is not None:
        result.update(
            action="cooldown",
            reason=f"drift share {share:.2f} >= {settings.drift_share_threshold}, but a retrain was "
            f"triggered on {recent}, inside the {settings.retrain_cooldown_days}-day cool-down",
        )
    else:
        drifted = sorted(c for c, v in numbers["columns"].items() if v["score"] >= 0.1)
        result.update(
            action="retrain",
            reason=f"drift share {share:.2f} >= threshold {settings.drift_share_threshold} "
            f"(drifted: {', '.join(drifted) or 'see report'})",
        )
    write_json(result, out_dir / "result.json")
    return result


def drift_events(settings: Settings) -> list[dict]:
    """All monitoring results whose drift share passed the threshold, oldest first."""
    events = []
    for p in sorted(settings.monitoring_dir.glob("ds=*/result.json")):
        r = json.loads(p.read_text())
        if r.get("drift_share") is not None and r["drift_share"] >= r["threshold"]:
            events.append(r)
    return events
