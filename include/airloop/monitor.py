"""Monitor: the nightly check of the champion, and what it records.

Each run (keyed by ``ds``) compares the champion's training window (reference) with the recent
validated days (current): data drift and a data summary on the features, drift of the champion's
predictions, and, once the delayed labels of scored days have arrived, the champion's performance on
them (``airloop.reports``). It then applies the retraining policy (``airloop.policy``) and records
the result: the day's monitoring folder holds the reports and ``result.json`` (the numbers and the
decision), ``monitoring/history.csv`` the key numbers of every run, and MLflow the same numbers
against the champion's model version.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from airloop import lake
from airloop import model as m
from airloop.config import Settings
from airloop.labels import LABEL_DAY, arrived_labels, join_labels, training_labels
from airloop.policy import (
    cooldown_days,
    cooldown_ends,
    decide,
    drift_streak,
    history,
    last_retrain,
    reference_days,
    refused_in_a_row,
)
from airloop.registry import CHAMPION, client, load_holdout, load_model, training_runs, version_by_alias
from airloop.reports import (
    PREDICTION,
    SNAPSHOT_SUFFIX,
    drift_report,
    html,
    performance_report,
    prediction_drift_report,
    render_html,
    snapshot_bytes,
)
from airloop.storage import write_bytes, write_json, write_text


def _champion_holdout(settings: Settings, champ: Any) -> pd.DataFrame:
    """The champion's holdout rows with its predictions: the reference for predictions and performance."""
    holdout = load_holdout(settings, champ.run_id)
    model = load_model(settings, str(champ.version))
    pred = m.predict(settings, model, holdout[settings.spec.model_features])
    return pd.DataFrame({"target": holdout[settings.spec.label].to_numpy(), PREDICTION: pred})


def _predictions(settings: Settings, dates: list[str], version: str) -> pd.DataFrame:
    present = sorted(set(dates) & set(lake.dates(settings, lake.PREDICTIONS)))
    if not present:
        return pd.DataFrame()
    preds = lake.read(settings, lake.PREDICTIONS, present)
    return preds[preds["model_version"] == version]


def run_checks(settings: Settings, ds: str, active_training: int = 0) -> dict:
    """Check the champion on ``ds`` and decide what the loop does: ``bootstrap`` (no champion yet,
    enough data), ``retrain``, ``cooldown`` / ``alert`` (something is wrong, no retrain now), ``none``
    or ``wait``. ``active_training`` is the number of queued or running training runs (de-duplication).
    Writes the day's monitoring folder (reports and ``result.json``) and logs the numbers to MLflow."""
    spec = settings.spec
    available = lake.dates(settings, lake.VALIDATED, end=ds)
    out_dir = lake.monitoring(settings, ds)
    result: dict[str, Any] = {
        "ds": ds,
        "threshold": settings.drift_share_threshold,
        "drift_share": None,
        "dataset_drift": None,
        "performance": None,
        "reports": {},
    }
    champ = version_by_alias(settings, CHAMPION)
    if champ is None:
        window = available[-settings.train_window_days :]
        labelled = len(set(training_labels(settings, window, as_of=ds)[LABEL_DAY]))
        enough = labelled >= settings.min_train_days
        action = "bootstrap" if enough else "wait"
        reason = (
            f"no champion yet; {labelled} labelled validated days ({'enough' if enough else 'need'} "
            f"{settings.min_train_days} to train)"
        )
        if settings.label_source == "feed" and len(window) >= settings.min_train_days and not labelled:
            reason += (
                f"; no label has arrived in the label feed ({lake.label_landing(settings)}/): set "
                "AIRLOOP_LABEL_SOURCE=batch if your daily batches carry their final labels"
            )
        if enough and active_training:
            action, reason = "alert", f"{reason}; a training run is already queued or running: no new trigger"
        elif enough:  # a refused first model is not retried every day on the same data: the back-off holds it
            runs = training_runs(settings)
            refused = refused_in_a_row(runs)
            last = last_retrain(ds, history(settings, before=ds), runs)
            wait, again = cooldown_days(settings, refused), cooldown_ends(settings, last, refused)
            if refused and again and ds < again:
                action = "wait"
                reason = (
                    f"{reason}; the gate refused the last {refused} first model(s), the latest on {last} "
                    f"({runs[-1]['gate_reason']}): trying again on {again} ({wait}-day back-off)"
                )
            result["policy"] = {"refused_in_a_row": refused, "last_retrain": last, "cooldown_days": wait}
        result.update(action=action, reason=reason, causes=["bootstrap"] if action in ("bootstrap", "alert") else [])
        return _save(settings, result)

    version = str(champ.version)
    past = history(settings, before=ds)
    train_start, train_end = m.train_window(client(settings).get_run(champ.run_id))
    window = [d for d in available if train_start <= d <= train_end]
    ref_dates, ref_change = reference_days(settings, window, past)
    cur_dates = [d for d in available[-settings.drift_current_days :] if d > train_end]
    result.update(champion_version=version, reference=ref_dates, reference_change_point=ref_change, current=cur_dates)
    out_dir.mkdir(parents=True, exist_ok=True)

    holdout = None
    streak = 0
    if ref_dates and cur_dates:
        reference = lake.read(settings, lake.VALIDATED, ref_dates)
        current = lake.read(settings, lake.VALIDATED, cur_dates)
        snapshot, numbers = drift_report(settings, reference, current)
        result.update(numbers)
        result["reports"]["data"] = _save_report(settings, snapshot, out_dir, "report")
        streak = drift_streak(past, version, bool(result["dataset_drift"]))
        if result["dataset_drift"]:
            carried = past[-1].get("change_point") if streak > 1 and past else None
            result["change_point"] = carried or _change_point(settings, reference, cur_dates)
        preds = _predictions(settings, cur_dates, version)
        if len(preds):
            holdout = _champion_holdout(settings, champ)
            snap, pred_drift = prediction_drift_report(settings, holdout[PREDICTION], preds["score"])
            result["prediction_drift"] = pred_drift
            result["reports"]["predictions"] = _save_report(settings, snap, out_dir, "predictions")

    # performance: the champion's predictions on the most recent days whose labels have arrived
    labels = arrived_labels(settings, ds)
    scored = _predictions(settings, sorted(set(labels[LABEL_DAY])), version) if len(labels) else pd.DataFrame()
    perf_days = sorted(set(scored["ds"]))[-settings.performance_window_days :] if len(scored) else []
    if perf_days:
        joined = join_labels(settings, scored[scored["ds"].isin(perf_days)], labels)
        result["performance_days"], result["performance_rows"] = perf_days, len(joined)
        current = pd.DataFrame({"target": joined[spec.label].to_numpy(), PREDICTION: joined["score"].to_numpy()})
        if spec.task == "binary_classification" and current["target"].nunique() < 2:
            result["performance_skipped"] = f"labelled days {perf_days} hold only one class"
        else:
            holdout = holdout if holdout is not None else _champion_holdout(settings, champ)
            snap, perf = performance_report(settings, holdout, current)
            if settings.metric not in perf:
                raise ValueError(
                    f"the primary metric {settings.metric!r} is not among Evidently's performance metrics "
                    f"{sorted(perf)}: set AIRLOOP_PRIMARY_METRIC to one of them"
                )
            result.update(performance_metrics=perf, performance=perf[settings.metric])
            result["reports"]["performance"] = _save_report(settings, snap, out_dir, "performance")

    runs = training_runs(settings)
    last_end = max((r["window"][1] for r in runs), default=train_end)
    new_labels = int((labels[LABEL_DAY] > last_end).sum()) if len(labels) else 0
    change = result.get("change_point")
    facts = {
        "ds": ds,
        "drift_share": result["drift_share"],
        "dataset_drift": result["dataset_drift"],
        "streak": streak,
        "change_point": change,
        "settled_days": len([d for d in available if change and d >= change]),
        "performance": result["performance"],
        "performance_days": perf_days,
        "last_retrain": last_retrain(ds, past, runs),
        "refused_in_a_row": refused_in_a_row(runs),
        "new_labels": new_labels,
        "active_training": active_training,
    }
    action, reason, causes = decide(settings, facts)
    if not cur_dates and not perf_days:
        reason = "no validated days after the champion's training window yet"
    result.update(
        action=action,
        reason=reason,
        causes=causes,
        policy={k: v for k, v in facts.items() if k != "ds"},
        report=result["reports"].get("data"),
    )
    _save(settings, result)
    log_to_mlflow(settings, champ, result)
    return result


def _change_point(settings: Settings, reference: pd.DataFrame, cur_dates: list[str]) -> str:
    """Where a drift episode began: the first current day whose rows drift from the reference on their
    own (Evidently's dataset-drift test, day by day); the latest day when none does alone."""
    for d in cur_dates:
        _, numbers = drift_report(settings, reference, lake.read(settings, lake.VALIDATED, [d]), summary=False)
        if numbers["dataset_drift"]:
            return d
    return cur_dates[-1]


def _save_report(settings: Settings, snapshot: Any, out_dir: Path, name: str) -> str:
    """Keep a report as its gzipped snapshot (for good) and as HTML (for ``report_html_days``); return the
    HTML's path (``airloop report --date D`` renders it again once pruned)."""
    write_bytes(snapshot_bytes(snapshot), out_dir / f"{name}{SNAPSHOT_SUFFIX}")
    return str(write_text(html(snapshot), out_dir / f"{name}.html"))


def prune_html(settings: Settings, ds: str) -> list[Path]:
    """Delete the HTML reports of checks more than ``report_html_days`` before ``ds`` whose snapshot is kept
    (0 keeps every page); return what was deleted."""
    keep = settings.report_html_days
    if not keep:
        return []
    cutoff = (date.fromisoformat(ds) - timedelta(days=keep)).isoformat()
    gone = []
    for day in lake.monitoring_days(settings):
        if day > cutoff:
            break
        for page in lake.monitoring(settings, day).glob("*.html"):
            if page.with_name(page.stem + SNAPSHOT_SUFFIX).exists():
                page.unlink()
                gone.append(page)
    return gone


def render_reports(settings: Settings, ds: str) -> list[Path]:
    """The HTML pages of a day's reports, rendered again from their snapshots where pruned."""
    folder = lake.monitoring(settings, ds)
    snapshots = sorted(folder.glob(f"*{SNAPSHOT_SUFFIX}"))
    if not snapshots:
        raise FileNotFoundError(f"no monitoring report for {ds} under {folder}")
    pages = []
    for snap in snapshots:
        page = folder / (snap.name.removesuffix(SNAPSHOT_SUFFIX) + ".html")
        if not page.exists():
            write_text(render_html(snap.read_bytes()), page)
        pages.append(page)
    return pages


def _save(settings: Settings, result: dict) -> dict:
    write_json(result, lake.monitoring(settings, result["ds"]) / lake.RESULT_FILE)
    write_history_table(settings)
    prune_html(settings, result["ds"])
    return result


HISTORY_COLUMNS = ("ds", "action", "champion_version", "drift_share", "drifted_count", "dataset_drift", "performance")


def write_history_table(settings: Settings) -> Any:
    """``monitoring/history.csv``: one row per check with the key numbers (rebuilt atomically)."""
    rows = []
    for r in history(settings):
        row = {k: r.get(k) for k in HISTORY_COLUMNS}
        row["prediction_drift"] = (r.get("prediction_drift") or {}).get("score")
        row["new_labels"] = (r.get("policy") or {}).get("new_labels")
        row["streak"] = (r.get("policy") or {}).get("streak")
        row["causes"] = ",".join(r.get("causes") or [])
        rows.append(row)
    path = settings.monitoring_dir / "history.csv"
    write_text(pd.DataFrame(rows).to_csv(index=False), path)
    return path


def _model_id(mv: Any) -> str | None:
    """The LoggedModel id of a registry version (``model_id`` may be None on SQLite; it is in ``source``)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    source = str(mv.source or "")
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def log_to_mlflow(settings: Settings, champ: Any, result: dict) -> str:
    """Log the check's key numbers to MLflow (experiment ``<experiment>_monitoring``, one run per day,
    metrics linked to the champion's logged model) and tag the champion's version with the latest."""
    import mlflow

    c = client(settings)
    name = f"{settings.experiment_name}_monitoring"
    exp = c.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else c.create_experiment(name, artifact_location=settings.artifact_location)
    ds = result["ds"]
    existing = c.search_runs([exp_id], filter_string=f"tags.`airloop.monitor_ds` = '{ds}'")
    metrics = {
        k: float(result[k]) for k in ("drift_share", "drifted_count", "performance") if result.get(k) is not None
    }
    if result.get("prediction_drift"):
        metrics["prediction_drift_score"] = result["prediction_drift"]["score"]
    metrics.update({f"perf_{k}": v for k, v in (result.get("performance_metrics") or {}).items()})
    metrics.update({f"drift_{col}": v["score"] for col, v in (result.get("columns") or {}).items()})
    metrics["new_labels"] = float(result["policy"]["new_labels"])
    version = str(champ.version)
    tags = {
        "airloop.monitor_ds": ds,
        "airloop.model_name": settings.registered_model,
        "airloop.model_version": version,
        "airloop.action": result["action"],
        "airloop.reason": result["reason"][:5000],
    }
    step = int(ds.replace("-", ""))
    with mlflow.start_run(
        run_id=existing[0].info.run_id if existing else None,
        experiment_id=exp_id,
        run_name=f"monitor_{ds}",
    ) as run:
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics, step=step, model_id=_model_id(champ))
        mlflow.log_dict(result, "result.json")
    mv_tags = {"airloop.monitor.last_ds": ds, "airloop.monitor.last_action": result["action"]}
    for k in ("drift_share", "performance"):
        if k in metrics:
            mv_tags[f"airloop.monitor.{k}"] = f"{metrics[k]:.6f}"
    for k, v in mv_tags.items():
        c.set_model_version_tag(settings.registered_model, version, k, v)
    return run.info.run_id
