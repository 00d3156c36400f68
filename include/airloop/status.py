"""Status: what the loop has done so far, read from the lake, the monitor results and MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airloop import lake
from airloop.config import Settings
from airloop.policy import history
from airloop.registry import CANARY, CHALLENGER, CHAMPION, PREVIOUS, training_runs, version_by_alias
from airloop.reports import SNAPSHOT_SUFFIX


def _latest(dates: list[str]) -> str | None:
    return dates[-1] if dates else None


def _kept(page: str) -> str:
    path = Path(page)
    return page if path.exists() else str(path.with_name(path.stem + SNAPSHOT_SUFFIX))


def retrains(settings: Settings) -> list[dict]:
    """Every training run with its trigger, registered version and gate decision, oldest first."""
    out = []
    for r in training_runs(settings):
        metrics = r.pop("metrics")
        out.append({**r, "holdout_metric": {settings.metric: metrics.get(f"holdout_{settings.metric}")}})
    return out


def drift_episodes(checks: list[dict], runs: list[dict]) -> list[dict]:
    """Each drift episode: the run of consecutive drifted checks, when the change began, the retrain that
    answered it (the first policy retrain triggered during it, with its gate decision), and the first check
    without drift after it (None while it lasts)."""
    episodes: list[dict] = []
    current: dict | None = None
    for c in checks:
        if c.get("dataset_drift"):
            if current is None:
                current = {"change_point": c.get("change_point"), "first_flagged": c["ds"], "checks": 0}
                episodes.append(current)
            current.update(last_flagged=c["ds"], checks=current["checks"] + 1, resolved=None)
        elif current is not None and c.get("dataset_drift") is False:
            current["resolved"] = c["ds"]
            current = None
    for e in episodes:
        end = e["resolved"] or "9999-12-31"
        answer = [r for r in runs if r["trigger"] == "retrain" and e["first_flagged"] <= (r["trigger_ds"] or "") < end]
        e["retrain"] = {k: answer[0][k] for k in ("trigger_ds", "version", "gate")} if answer else None
    return episodes


def collect_status(settings: Settings) -> dict[str, Any]:
    """The current state of the loop as a JSON-ready dict (``airloop status --json``)."""
    aliases = {a: version_by_alias(settings, a) for a in (CHAMPION, CHALLENGER, PREVIOUS, CANARY)}
    runs = retrains(settings)
    checks = history(settings)
    scored = lake.dates(settings, lake.PREDICTIONS)
    events = [
        {
            "ds": e["ds"],
            "drift_share": e["drift_share"],
            "action": e["action"],
            "reason": e["reason"],
            "report": e.get("report"),
            "retrain_runs": [r["run_id"] for r in runs if r["trigger_ds"] == e["ds"]],
        }
        for e in checks
        if e.get("dataset_drift")
    ]
    return {
        "home": str(settings.home),
        "mlflow_tracking_uri": settings.tracking_uri,
        "model_name": settings.registered_model,
        "champion_version": str(aliases[CHAMPION].version) if aliases[CHAMPION] else None,
        "challenger_version": str(aliases[CHALLENGER].version) if aliases[CHALLENGER] else None,
        "previous_champion_version": str(aliases[PREVIOUS].version) if aliases[PREVIOUS] else None,
        "canary_version": str(aliases[CANARY].version) if aliases[CANARY] else None,
        "latest_ingested": _latest(lake.dates(settings, lake.RAW)),
        "latest_validated": _latest(lake.dates(settings, lake.VALIDATED)),
        "latest_scored": _latest(scored),
        "quarantined": lake.dates(settings, lake.QUARANTINE),
        "predictions": [str(lake.data_file(settings, lake.PREDICTIONS, d)) for d in scored],
        # the page, or its kept snapshot once the page is pruned (`airloop report --date D` renders it again)
        "reports": [_kept(r["report"]) for r in checks if r.get("report")],
        "drift_events": events,
        "drift_episodes": drift_episodes(checks, runs),
        "retrains": runs,
    }


_ALIASES = (
    ("champion", "champion_version"),
    ("challenger", "challenger_version"),
    ("previous champion", "previous_champion_version"),
    ("canary", "canary_version"),
)


def _version(version: Any) -> str:
    return "none" if version is None else f"v{version}"


def render_status(status: dict[str, Any]) -> str:
    """A short human summary of :func:`collect_status`."""
    lines = [
        f"airloop state in {status['home']}",
        "  " + "  ".join(f"{what}: {_version(status[key])}" for what, key in _ALIASES),
        f"  latest ingested {status['latest_ingested'] or 'none'}, validated {status['latest_validated'] or 'none'}, "
        f"scored {status['latest_scored'] or 'none'}; quarantined: {', '.join(status['quarantined']) or 'none'}",
        f"  predictions: {len(status['predictions'])} days; drift reports: {len(status['reports'])}",
    ]
    for e in status["drift_episodes"]:
        answer = e["retrain"]
        answered = f"retrained on {answer['trigger_ds']} -> v{answer['version']} {answer['gate']}" if answer else ""
        lines.append(
            f"  drift episode from {e['change_point'] or e['first_flagged']} ({e['checks']} drifted checks, "
            f"{e['first_flagged']}..{e['last_flagged']}): {answered or 'no retrain'}; "
            + (f"resolved {e['resolved']}" if e["resolved"] else "ongoing")
        )
    for r in status["retrains"]:
        lines.append(
            f"  training ({r['trigger_reason']}, {r['window'][0]}..{r['window'][1]}) -> v{r['version']} "
            f"{r['gate']}: {r['gate_reason']}"
        )
    lines.append(f"  MLflow: {status['mlflow_tracking_uri']}")
    return "\n".join(lines)
