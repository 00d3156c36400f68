"""Status: what the loop has done so far, read from the lake, the monitor results and MLflow."""

from __future__ import annotations

from typing import Any

from airloop.config import Settings
from airloop.quarantine import quarantined_dates
from airloop.registry import CHALLENGER, CHAMPION, PREVIOUS, client, version_by_alias
from airloop.storage import partition_dates


def _latest(dates: list[str]) -> str | None:
    return dates[-1] if dates else None


def training_runs(settings: Settings) -> list[dict]:
    """Every training run with its trigger, registered version and gate decision, oldest first."""
    c = client(settings)
    exp = c.get_experiment_by_name(settings.experiment_name)
    runs = []
    for r in sorted(c.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time):
        versions = c.search_model_versions(f"run_id='{r.info.run_id}'")
        mv = versions[0] if versions else None
        runs.append(
            {
                "run_id": r.info.run_id,
                "trigger_reason": r.data.tags.get("airloop.trigger_reason"),
                "trigger_ds": r.data.tags.get("airloop.trigger_ds") or None,
                "window": [r.data.params.get("train_start"), r.data.params.get("train_end")],
                "holdout_metric": {settings.metric: r.data.metrics.get(f"holdout_{settings.metric}")},
                "version": str(mv.version) if mv else None,
                "gate": mv.tags.get("airloop.gate.decision") if mv else None,
                "gate_reason": mv.tags.get("airloop.gate.reason") if mv else None,
            }
        )
    return runs


def collect_status(settings: Settings) -> dict[str, Any]:
    """The current state of the loop as a JSON-ready dict (``airloop status --json``)."""
    from airloop.monitor import drift_events

    lake = settings.lake_dir
    aliases = {a: version_by_alias(settings, a) for a in (CHAMPION, CHALLENGER, PREVIOUS)}
    runs = training_runs(settings)
    scored = partition_dates(lake / "predictions")
    events = [
        {
            "ds": e["ds"],
            "drift_share": e["drift_share"],
            "action": e["action"],
            "reason": e["reason"],
            "report": e.get("report"),
            "retrain_runs": [r["run_id"] for r in runs if r["trigger_ds"] == e["ds"]],
        }
        for e in drift_events(settings)
    ]
    return {
        "home": str(settings.home),
        "mlflow_tracking_uri": settings.tracking_uri,
        "model_name": settings.model_name,
        "champion_version": str(aliases[CHAMPION].version) if aliases[CHAMPION] else None,
        "challenger_version": str(aliases[CHALLENGER].version) if aliases[CHALLENGER] else None,
        "previous_champion_version": str(aliases[PREVIOUS].version) if aliases[PREVIOUS] else None,
        "latest_ingested": _latest(partition_dates(lake / "raw")),
        "latest_validated": _latest(partition_dates(lake / "validated")),
        "latest_scored": _latest(scored),
        "quarantined": quarantined_dates(settings),
        "predictions": [str(settings.partition("predictions", d) / "data.parquet") for d in scored],
        "reports": [str(p) for p in sorted(settings.monitoring_dir.glob("ds=*/report.html"))],
        "drift_events": events,
        "retrains": runs,
    }


def render_status(status: dict[str, Any]) -> str:
    """A short human summary of :func:`collect_status`."""
    lines = [
        f"airloop state in {status['home']}",
        f"  champion: v{status['champion_version']}  challenger: v{status['challenger_version']}  "
        f"previous champion: v{status['previous_champion_version']}",
        f"  latest ingested {status['latest_ingested']}, validated {status['latest_validated']}, "
        f"scored {status['latest_scored']}; quarantined: {', '.join(status['quarantined']) or 'none'}",
        f"  predictions: {len(status['predictions'])} days; drift reports: {len(status['reports'])}",
    ]
    for e in status["drift_events"]:
        lines.append(f"  drift on {e['ds']}: share {e['drift_share']:.2f} -> {e['action']} {e['retrain_runs']}")
    for r in status["retrains"]:
        lines.append(
            f"  training ({r['trigger_reason']}, {r['window'][0]}..{r['window'][1]}) -> v{r['version']} "
            f"{r['gate']}: {r['gate_reason']}"
        )
    lines.append(f"  MLflow: {status['mlflow_tracking_uri']}")
    return "\n".join(lines)
