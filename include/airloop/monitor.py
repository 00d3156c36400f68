"""Monitor: the nightly Evidently checks of the champion and the retraining policy that acts on them.

Each run (keyed by ``ds``) compares the champion's training window (reference) with the recent
validated days (current): data drift and a data summary on the features, drift of the champion's
predictions, and, once the delayed labels of scored days have arrived, the champion's performance on
them. Results: ``monitoring/ds=<ds>/`` holds the HTML reports and ``result.json`` (the numbers and the
decision), ``monitoring/history.csv`` the key numbers of every run, and MLflow the same numbers
against the champion's model version. Thresholds and stat tests are Evidently's (configured per
column type in Settings); the decision applies the policy: persistence, performance floor, cool-down,
de-duplication and a minimum of new labelled rows.
"""

from __future__ import annotations

import json
import warnings
from datetime import date, timedelta
from typing import Any

import pandas as pd

from airloop.config import Settings
from airloop.registry import CHAMPION, client, load_model, version_by_alias
from airloop.storage import DATA_FILE, partition_dates, read_partitions, write_json, write_parquet, write_text

# what the DAG's branch does with each action
TRIGGER_ACTIONS = ("bootstrap", "retrain")
ALERT_ACTIONS = ("alert", "cooldown")
QUIET_ACTIONS = ("none", "wait")
# Evidently metric type -> the project's metric name (as in airloop.train.metrics)
PERFORMANCE_METRICS = {
    "RocAuc": "roc_auc",
    "Accuracy": "accuracy",
    "Precision": "precision",
    "Recall": "recall",
    "F1Score": "f1",
    "LogLoss": "log_loss",
    "R2Score": "r2",
    "RMSE": "rmse",
    "MAE": "mae",
    "MeanError": "mean_error",
}
PREDICTION = "prediction_value"  # the champion's output column in the Evidently datasets


def _quiet_run(report: Any, current: Any, reference: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return report.run(current_data=current, reference_data=reference)


def _metrics_and_tests(snapshot: Any) -> tuple[list[dict], list[dict]]:
    d = snapshot.dict()
    return d["metrics"], d["tests"]


def _kind(entry: dict) -> str:
    """``evidently:metric_v2:ValueDrift`` -> ``ValueDrift``."""
    return str(entry.get("type", "")).rsplit(":", 1)[-1]


def drift_preset(settings: Settings, columns: list[str] | None = None) -> Any:
    """Evidently's DataDriftPreset with the configured dataset share, methods and thresholds."""
    from evidently.presets import DataDriftPreset

    return DataDriftPreset(
        columns=columns,
        drift_share=settings.drift_share_threshold,
        num_method=settings.drift_num_method,
        cat_method=settings.drift_cat_method,
        num_threshold=settings.drift_num_threshold,
        cat_threshold=settings.drift_cat_threshold,
        per_column_method=settings.drift_column_methods or None,
    )


def sample_rows(settings: Settings, df: Any) -> Any:
    """At most ``drift_sample_rows`` rows of ``df`` (seeded): Evidently's drift preset computes each
    column's test three times and renders its plots: 69-177 s for 1 M x 20 columns on 2 cores; on a
    100 k sample its decision matched the full run's (bench/drift.py)."""
    n = settings.drift_sample_rows
    return df.sample(n, random_state=settings.seed) if n and len(df) > n else df


def drift_report(
    settings: Settings, reference: pd.DataFrame, current: pd.DataFrame, summary: bool = True
) -> tuple[Any, dict]:
    """Data drift (and a data summary) of the spec's features; return the snapshot and its numbers:
    share and count of drifted columns, Evidently's dataset-drift verdict, and per column the score,
    the test used, its threshold and whether Evidently's test found drift."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    spec = settings.spec
    unknown = sorted(set(settings.drift_column_methods) - set(spec.feature_names))
    if unknown:
        raise ValueError(f"drift_column_methods names unknown columns {unknown}; features: {spec.feature_names}")
    definition = DataDefinition(numerical_columns=spec.numeric_features, categorical_columns=spec.categorical_features)
    cols = spec.feature_names
    numbers: dict[str, Any] = {"columns": {}, "rows_reference": len(reference), "rows_current": len(current)}
    reference, current = sample_rows(settings, reference), sample_rows(settings, current)
    if len(reference) < numbers["rows_reference"] or len(current) < numbers["rows_current"]:
        numbers["sampled_rows"] = {"reference": len(reference), "current": len(current)}
    presets = [drift_preset(settings), *([DataSummaryPreset()] if summary else [])]
    snapshot = _quiet_run(
        Report(presets, include_tests=True),
        Dataset.from_pandas(current[cols], data_definition=definition),
        Dataset.from_pandas(reference[cols], data_definition=definition),
    )
    metrics, tests = _metrics_and_tests(snapshot)
    for m in metrics:
        cfg, value = m.get("config", {}), m["value"]
        if _kind(cfg) == "DriftedColumnsCount":
            numbers["drift_share"] = float(value["share"])
            numbers["drifted_count"] = int(value["count"])
        elif _kind(cfg) == "ValueDrift":
            numbers["columns"][cfg["column"]] = {
                "score": float(value),
                "method": cfg.get("method"),
                "threshold": cfg.get("threshold"),
            }
    for t in tests:
        params = t.get("metric_config", {}).get("params", {})
        failed = str(t["status"]).endswith("FAIL")
        if _kind(params) == "DriftedColumnsCount":
            numbers["dataset_drift"] = failed
        elif _kind(params) == "ValueDrift" and params.get("column") in numbers["columns"]:
            numbers["columns"][params["column"]]["drifted"] = failed
    if "drift_share" not in numbers or "dataset_drift" not in numbers:
        raise RuntimeError("Evidently's drift report has no DriftedColumnsCount metric and test")
    return snapshot, numbers


def prediction_drift_report(settings: Settings, reference: pd.Series, current: pd.Series) -> tuple[Any, dict]:
    """Drift of the champion's outputs (probability or value): its scores on its own holdout rows vs
    its scores on the current days, with the same Evidently preset and settings as the features."""
    from evidently import DataDefinition, Dataset, Report

    definition = DataDefinition(numerical_columns=[PREDICTION])
    reference, current = sample_rows(settings, reference), sample_rows(settings, current)
    snapshot = _quiet_run(
        Report([drift_preset(settings, [PREDICTION])], include_tests=True),
        Dataset.from_pandas(pd.DataFrame({PREDICTION: current.to_numpy()}), data_definition=definition),
        Dataset.from_pandas(pd.DataFrame({PREDICTION: reference.to_numpy()}), data_definition=definition),
    )
    metrics, tests = _metrics_and_tests(snapshot)
    out: dict[str, Any] = {}
    for m in metrics:
        if _kind(m.get("config", {})) == "ValueDrift":
            out = {"score": float(m["value"]), "method": m["config"].get("method")}
            out["threshold"] = m["config"].get("threshold")
    for t in tests:
        if _kind(t.get("metric_config", {}).get("params", {})) == "ValueDrift":
            out["drifted"] = str(t["status"]).endswith("FAIL")
    return snapshot, out


def performance_report(settings: Settings, reference: pd.DataFrame, current: pd.DataFrame) -> tuple[Any, dict]:
    """Evidently's ClassificationPreset (binary, on probabilities) or RegressionPreset on frames with
    columns ``target`` and ``prediction_value``; reference = the champion on its holdout rows."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    if settings.spec.task == "binary_classification":
        task = BinaryClassification(target="target", prediction_probas=PREDICTION)
        definition = DataDefinition(
            numerical_columns=[PREDICTION], categorical_columns=["target"], classification=[task]
        )
        preset = ClassificationPreset()
    else:
        task = Regression(target="target", prediction=PREDICTION)
        definition = DataDefinition(numerical_columns=["target", PREDICTION], regression=[task])
        preset = RegressionPreset()
    snapshot = _quiet_run(
        Report([preset], include_tests=True),
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    metrics, _ = _metrics_and_tests(snapshot)
    numbers: dict[str, float] = {}
    for m in metrics:
        name = PERFORMANCE_METRICS.get(_kind(m.get("config", {})))
        if name is not None:
            value = m["value"]
            numbers[name] = float(value["mean"] if isinstance(value, dict) else value)
    return snapshot, numbers


# ----------------------------------------------------------------------------------------- labels


def labels_dir(settings: Settings) -> Any:
    return settings.lake_dir / "labels"


def collect_labels(settings: Settings, ds: str) -> dict:
    """Copy the label files that arrived on or before ``ds`` (``landing/labels/ds=<arrival>/*.csv``)
    into ``lake/labels/ds=<arrival>/`` (one parquet per arrival day, atomic, idempotent)."""
    spec = settings.spec
    landing = settings.landing_dir / "labels"
    written = []
    for arrival in partition_like(landing):
        if arrival > ds:
            continue
        target = labels_dir(settings) / f"ds={arrival}" / DATA_FILE
        files = sorted((landing / f"ds={arrival}").glob("*.csv"))
        if (target.exists() and arrival != ds) or not files:
            continue
        frames = []
        for f in files:
            df = pd.read_csv(f)
            missing = [c for c in (spec.entity, spec.timestamp, spec.label) if c not in df]
            if missing:
                raise ValueError(
                    f"label file {f} lacks columns {missing}; expected {spec.entity}, {spec.timestamp}, {spec.label}"
                )
            frames.append(df[[spec.entity, spec.timestamp, spec.label]])
        labels = pd.concat(frames, ignore_index=True).drop_duplicates([spec.entity, spec.timestamp], keep="last")
        labels[spec.timestamp] = pd.to_datetime(labels[spec.timestamp], utc=True, format="ISO8601")
        labels["label_ds"] = labels[spec.timestamp].dt.strftime("%Y-%m-%d")
        write_parquet(labels.reset_index(drop=True), target)
        written.append(arrival)
    return {"ds": ds, "written": written, "arrivals": [d for d in partition_dates(labels_dir(settings)) if d <= ds]}


def partition_like(folder: Any) -> list[str]:
    """Sorted ``ds=`` folder dates in ``folder`` (whatever files they hold)."""
    return sorted(p.name[3:] for p in folder.glob("ds=*") if p.is_dir()) if folder.exists() else []


def arrived_labels(settings: Settings, ds: str) -> pd.DataFrame:
    """All labels that arrived on or before ``ds``; column ``label_ds`` is the day they label."""
    spec = settings.spec
    arrivals = [d for d in partition_dates(labels_dir(settings)) if d <= ds]
    if not arrivals:
        return pd.DataFrame(columns=[spec.entity, spec.timestamp, spec.label, "label_ds"])
    return read_partitions(labels_dir(settings), arrivals)


# ----------------------------------------------------------------------------------------- policy


def history(settings: Settings, before: str | None = None) -> list[dict]:
    """Every monitoring result (``result.json``), oldest first; only days before ``before`` if given."""
    results = [json.loads(p.read_text()) for p in sorted(settings.monitoring_dir.glob("ds=*/result.json"))]
    return [r for r in results if before is None or r["ds"] < before]


def drift_streak(past: list[dict], champion_version: str, drifted_now: bool) -> int:
    """Consecutive checks, ending now, in which Evidently found dataset drift against the same champion."""
    if not drifted_now:
        return 0
    streak = 1
    for r in reversed(past):
        if r.get("champion_version") != champion_version or not r.get("dataset_drift"):
            break
        streak += 1
    return streak


def training_runs(settings: Settings) -> list[dict]:
    """(trigger day, last training day) of every training run, from MLflow."""
    c = client(settings)
    exp = c.get_experiment_by_name(settings.experiment_name)
    return [
        {
            "trigger_ds": r.data.tags.get("airloop.trigger_ds") or None,
            "train_end": r.data.params.get("train_end"),
            "run_id": r.info.run_id,
        }
        for r in c.search_runs([exp.experiment_id])
        if r.data.params.get("train_end")
    ]


def last_retrain(settings: Settings, ds: str, past: list[dict], runs: list[dict]) -> str | None:
    """The latest day on or before ``ds`` on which a retrain happened: a training run triggered that day
    (or, for a manual run, its last training day), or a trigger the monitor sent."""
    days = [r["trigger_ds"] or r["train_end"] for r in runs]
    days += [r["ds"] for r in past if r.get("action") in TRIGGER_ACTIONS]
    return max((d for d in days if d and d <= ds), default=None)


def decide(settings: Settings, facts: dict) -> tuple[str, str, list[str]]:
    """The retraining policy on one check's facts; return (action, reason, causes).

    ``facts``: drift_share, dataset_drift, streak, performance (metric value or None), performance_days,
    last_retrain (day or None), new_labels, active_training (queued/running training runs), ds."""
    causes, why = [], []
    share, metric = facts.get("drift_share"), settings.metric
    need = settings.drift_persist_checks
    if facts.get("dataset_drift"):
        text = f"drift share {share:.2f} >= {settings.drift_share_threshold} in {facts['streak']} consecutive checks"
        if facts["streak"] >= need:
            causes.append("drift")
            why.append(text)
        else:
            why.append(f"{text} (a retrain needs {need})")
    elif share is not None:
        why.append(f"drift share {share:.2f} < threshold {settings.drift_share_threshold}")
    perf = facts.get("performance")
    if perf is not None:
        days = ",".join(facts.get("performance_days", []))
        if perf < settings.monitor_floor:
            causes.append("performance")
            why.append(f"{metric} {perf:.3f} on labelled days {days} < floor {settings.monitor_floor}")
        else:
            why.append(f"{metric} {perf:.3f} on labelled days {days} >= floor {settings.monitor_floor}")
    reason = "; ".join(why) or "nothing to compare yet"
    if not causes:
        return ("alert" if facts.get("dataset_drift") else "none"), reason, causes
    if facts.get("active_training"):
        return "alert", f"{reason}; a training run is already queued or running: no new trigger", causes
    recent, cooldown = facts.get("last_retrain"), settings.retrain_cooldown_days
    if recent is not None and date.fromisoformat(facts["ds"]) - date.fromisoformat(recent) < timedelta(days=cooldown):
        return "cooldown", f"{reason}; a retrain happened on {recent}, inside the {cooldown}-day cool-down", causes
    if facts["new_labels"] < settings.min_new_labels:
        return (
            "alert",
            f"{reason}; only {facts['new_labels']} labelled rows after the last training window "
            f"(a retrain needs {settings.min_new_labels})",
            causes,
        )
    return "retrain", f"{reason} ({facts['new_labels']} new labelled rows)", causes


# ----------------------------------------------------------------------------------------- the check


def _champion_holdout(settings: Settings, champ: Any) -> pd.DataFrame:
    """The champion's holdout rows with its predictions: the reference for predictions and performance."""
    from airloop.train import load_holdout, predict

    holdout = load_holdout(settings, champ.run_id)
    model = load_model(settings, str(champ.version))
    pred = predict(settings, model, holdout[settings.spec.model_features])
    return pd.DataFrame({"target": holdout[settings.spec.label].to_numpy(), PREDICTION: pred})


def _predictions(settings: Settings, dates: list[str], version: str) -> pd.DataFrame:
    zone = settings.lake_dir / "predictions"
    present = [d for d in dates if (zone / f"ds={d}" / DATA_FILE).exists()]
    if not present:
        return pd.DataFrame()
    preds = read_partitions(zone, present)
    return preds[preds["model_version"] == version]


def _join_labels(settings: Settings, scored: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Predictions with their arrived labels: by entity and event time when predictions carry it,
    else by entity and day (one prediction per entity and day)."""
    spec = settings.spec
    if spec.timestamp in scored:
        left, right = scored.copy(), labels.copy()
        for frame in (left, right):
            frame[spec.timestamp] = pd.to_datetime(frame[spec.timestamp], utc=True).astype("datetime64[ns, UTC]")
        return left.merge(right.drop(columns="label_ds"), on=[spec.entity, spec.timestamp], how="inner")
    latest = labels.sort_values(spec.timestamp).drop_duplicates([spec.entity, "label_ds"], keep="last")
    return scored.merge(latest, left_on=[spec.entity, "ds"], right_on=[spec.entity, "label_ds"], how="inner")


def run_checks(settings: Settings, ds: str, active_training: int = 0) -> dict:
    """Check the champion on ``ds`` and decide what the loop does: ``bootstrap`` (no champion yet,
    enough data), ``retrain``, ``cooldown`` / ``alert`` (something is wrong, no retrain now), ``none``
    or ``wait``. ``active_training`` is the number of queued or running training runs (de-duplication).
    Writes ``monitoring/ds=<ds>/`` (reports and ``result.json``) and logs the numbers to MLflow."""
    spec = settings.spec
    validated_dir = settings.lake_dir / "validated"
    available = [d for d in partition_dates(validated_dir) if d <= ds]
    out_dir = settings.monitoring_dir / f"ds={ds}"
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
        enough = len(available) >= settings.min_train_days
        action = "bootstrap" if enough else "wait"
        reason = (
            f"no champion yet; {len(available)} validated days ({'enough' if enough else 'need'} "
            f"{settings.min_train_days} to train)"
        )
        if enough and active_training:
            action, reason = "alert", f"{reason}; a training run is already queued or running: no new trigger"
        result.update(action=action, reason=reason, causes=["bootstrap"] if enough else [])
        return _save(settings, result)

    version = str(champ.version)
    run = client(settings).get_run(champ.run_id)
    train_start, train_end = run.data.params["train_start"], run.data.params["train_end"]
    ref_dates = [d for d in available if train_start <= d <= train_end]
    cur_dates = [d for d in available[-settings.drift_current_days :] if d > train_end]
    result.update(champion_version=version, reference=ref_dates, current=cur_dates)
    out_dir.mkdir(parents=True, exist_ok=True)

    holdout = None
    if ref_dates and cur_dates:
        reference = read_partitions(validated_dir, ref_dates)
        current = read_partitions(validated_dir, cur_dates)
        snapshot, numbers = drift_report(settings, reference, current)
        result.update(numbers)
        result["reports"]["data"] = _save_html(snapshot, out_dir / "report.html")
        preds = _predictions(settings, cur_dates, version)
        if len(preds):
            holdout = _champion_holdout(settings, champ)
            snap, pred_drift = prediction_drift_report(settings, holdout[PREDICTION], preds["score"])
            result["prediction_drift"] = pred_drift
            result["reports"]["predictions"] = _save_html(snap, out_dir / "predictions.html")

    # performance: the champion's predictions on the most recent days whose labels have arrived
    labels = arrived_labels(settings, ds)
    scored = _predictions(settings, sorted(set(labels["label_ds"])), version) if len(labels) else pd.DataFrame()
    perf_days = sorted(set(scored["ds"]))[-settings.performance_window_days :] if len(scored) else []
    if perf_days:
        joined = _join_labels(settings, scored[scored["ds"].isin(perf_days)], labels)
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
            result["reports"]["performance"] = _save_html(snap, out_dir / "performance.html")

    past = history(settings, before=ds)
    runs = training_runs(settings)
    last_end = max((r["train_end"] for r in runs), default=train_end)
    new_labels = int((labels["label_ds"] > last_end).sum()) if len(labels) else 0
    facts = {
        "ds": ds,
        "drift_share": result["drift_share"],
        "dataset_drift": result["dataset_drift"],
        "streak": drift_streak(past, version, bool(result["dataset_drift"])),
        "performance": result["performance"],
        "performance_days": perf_days,
        "last_retrain": last_retrain(settings, ds, past, runs),
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


def _save_html(snapshot: Any, path: Any) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = snapshot.get_html_str(as_iframe=False)
    write_text(html, path)
    return str(path)


def _save(settings: Settings, result: dict) -> dict:
    write_json(result, settings.monitoring_dir / f"ds={result['ds']}" / "result.json")
    write_history_table(settings)
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
        "airloop.model_name": settings.model_name,
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
        c.set_model_version_tag(settings.model_name, version, k, v)
    return run.info.run_id


def drift_events(settings: Settings) -> list[dict]:
    """All monitoring results in which Evidently found dataset drift, oldest first."""
    return [r for r in history(settings) if r.get("dataset_drift")]
