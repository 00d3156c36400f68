"""Reports: the Evidently reports the monitor builds, and the numbers it reads from them.

Data drift (and a data summary) of the spec's features, drift of the champion's predictions, and the
champion's classification / regression performance; each returns Evidently's snapshot and a small
dict of numbers. Thresholds and stat tests are Evidently's, configured per column type in Settings.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from airloop.config import Settings

# Evidently metric type -> the project's metric name (airloop.model.METRICS)
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
SNAPSHOT_SUFFIX = ".json.gz"  # a report as Evidently's full snapshot, gzipped: kept for good, ~1 % of its HTML


def snapshot_bytes(snapshot: Any) -> bytes:
    """Evidently's full snapshot (widgets included), gzipped: what :func:`render_html` renders again."""
    import gzip

    return gzip.compress(snapshot.dumps().encode(), mtime=0)


def html(snapshot: Any) -> str:
    """The snapshot as a stand-alone HTML page (Evidently's renderer, its JavaScript inlined: ~3.7 MB)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return snapshot.get_html_str(as_iframe=False)


def render_html(data: bytes) -> str:
    """The HTML page of a stored snapshot (see :func:`snapshot_bytes`)."""
    import gzip

    from evidently.core.report import Snapshot

    return html(Snapshot.loads(gzip.decompress(data).decode()))


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
    """Data drift (and a data summary) of the spec's features (those not marked ``drift: false``);
    return the snapshot and its numbers: share and count of drifted columns, Evidently's dataset-drift
    verdict, per column the score, the test used, its threshold and whether Evidently's test found drift,
    and the same for the label (``target_drift``, None when a side has no labels; not in the share)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataSummaryPreset

    spec = settings.spec
    unknown = sorted(set(settings.drift_column_methods) - set(spec.feature_names))
    if unknown:
        raise ValueError(f"drift_column_methods names unknown columns {unknown}; features: {spec.feature_names}")
    cols = spec.drift_features
    # the label too, when both sides carry it: target drift is reported on its own, not in the share
    target = [spec.label] if all(spec.label in f and f[spec.label].notna().any() for f in (reference, current)) else []
    classes = spec.task == "binary_classification"
    definition = DataDefinition(
        numerical_columns=[c for c in spec.numeric_features if c in cols] + ([] if classes else target),
        categorical_columns=[c for c in spec.categorical_features if c in cols] + (target if classes else []),
    )
    numbers: dict[str, Any] = {"columns": {}, "rows_reference": len(reference), "rows_current": len(current)}
    reference, current = sample_rows(settings, reference), sample_rows(settings, current)
    if len(reference) < numbers["rows_reference"] or len(current) < numbers["rows_current"]:
        numbers["sampled_rows"] = {"reference": len(reference), "current": len(current)}
    presets = [
        drift_preset(settings, cols),
        *[ValueDrift(column=c) for c in target],
        *([DataSummaryPreset(columns=cols)] if summary else []),
    ]
    snapshot = _quiet_run(
        Report(presets, include_tests=True),
        Dataset.from_pandas(current[cols + target], data_definition=definition),
        Dataset.from_pandas(reference[cols + target], data_definition=definition),
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
    numbers["target_drift"] = numbers["columns"].pop(spec.label, None)
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
