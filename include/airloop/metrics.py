"""The loop's metrics for Prometheus, derived from the state the stages already write.

Nothing counts inside a stage: each stage leaves its partition and sidecar (``_ingest.json``,
``validation.json``, the materialization record, ``result.json``) and the registry its tags, and this
module reads them back as Prometheus metrics (``prometheus-client``'s collector API). So a re-run of a
day replaces its numbers instead of adding to them, a backfill is measured like a nightly run, and the
numbers are the same wherever they are read from.

The batch pattern is node-exporter's *textfile collector*: ``write_textfiles`` writes
``$AIRLOOP_HOME/metrics/*.prom`` atomically (a temp file renamed; ``prometheus_client.write_to_textfile``)
at the end of each DAG run and from ``airloop metrics --write``; a node-exporter started with
``--collector.textfile.directory`` pointing there serves them. Two files, disjoint metric names: the
lake's (cheap, no MLflow import: refreshed by the daily DAG) and the registry's (refreshed by the
monitor, training and rollback DAGs, which hold an MLflow client anyway).

Per-day series carry a ``ds`` label for the last ``AIRLOOP_METRICS_DAYS`` days present (bounded
cardinality: one series per day and metric, the older days drop out); timestamps are Unix seconds, so
a dashboard says "how long ago" with ``time() - metric``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from airloop import lake
from airloop.config import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

PREFIX = "airloop_"
LAKE_FILE = "airloop_lake.prom"
REGISTRY_FILE = "airloop_registry.prom"
# zones whose latest partition tells "is today's data in" (quarantine: the latest bad day)
FRESHNESS_ZONES = (lake.RAW, lake.VALIDATED, lake.QUARANTINE, lake.FEATURES, lake.PREDICTIONS)


def _day_seconds(ds: str) -> float:
    """A logical date as Unix seconds (its start, UTC)."""
    return datetime.fromisoformat(ds).replace(tzinfo=UTC).timestamp()


def _num_rows(path: Path) -> int | None:
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _gauge(name: str, doc: str, labels: list[str] | None = None, unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels, unit=unit)


def recent_days(settings: Settings) -> list[str]:
    """The last ``AIRLOOP_METRICS_DAYS`` days present in any zone or the monitor's results, oldest first."""
    days = set(lake.monitoring_days(settings))
    for zone in (lake.RAW, lake.VALIDATED, lake.QUARANTINE, lake.FEATURES, lake.PREDICTIONS):
        days.update(lake.dates(settings, zone))
    return sorted(days)[-settings.metrics_days :]


# --------------------------------------------------------------------------------------------- the lake


def lake_metrics(settings: Settings, now: float | None = None) -> Iterator[Metric]:
    """What landed, passed, failed, was materialized, scored and checked on each recent day, and how
    fresh each zone's latest partition is. Reads files only (Parquet footers, JSON sidecars)."""
    days = recent_days(settings)
    landed = _gauge("rows_landed", "Rows ingested from the landing batch of the day (raw partition)", ["ds"])
    validated = _gauge("rows_validated", "Rows of the day that passed validation (validated partition)", ["ds"])
    quarantined = _gauge("rows_quarantined", "Rows of the day's quarantined batch (when it was readable)", ["ds"])
    bad = _gauge("batch_quarantined", "1 when the day's batch is in quarantine, 0 when it was validated", ["ds"])
    evaluated = _gauge("validation_expectations_evaluated", "Expectations evaluated on the day's batch", ["ds"])
    failures = _gauge(
        "validation_failed_expectations",
        "Expectations the day's batch failed, by expectation, column and severity (critical: quarantined)",
        ["ds", "expectation", "column", "severity"],
    )
    m_rows = _gauge("materialized_rows", "Feature rows of the day written offline and to the online store", ["ds"])
    m_secs = _gauge("materialize_seconds", "Wall time of the day's materialization", ["ds"])
    preds = _gauge(
        "predictions",
        "Rows of the day's published predictions, by the model version that scored them",
        ["ds", "model_version"],
    )
    share = _gauge("drift_share", "Share of drifted feature columns in the monitor's check of the day", ["ds"])
    drifted = _gauge("drifted_columns", "Feature columns Evidently found drifted in the day's check", ["ds"])
    dataset = _gauge("dataset_drift", "1 when the day's check flagged dataset drift (share >= threshold)", ["ds"])
    col_drift = _gauge("column_drifted", "1 when the column drifted in the day's check, else 0", ["ds", "column"])
    col_score = _gauge("column_drift_score", "The column's drift score (Evidently's test statistic)", ["ds", "column"])
    perf = _gauge(
        "model_performance",
        "The champion's metrics on the most recent labelled, scored days, as checked on the day",
        ["ds", "metric"],
    )
    primary = _gauge("primary_metric", "The champion's primary (gate) metric on labelled days", ["ds", "metric"])
    action = _gauge("monitor_action", "1 for the action the monitor took on the day", ["ds", "action"])
    for ds in days:
        raw = lake.partition(settings, lake.RAW, ds)
        notes = _read_json(raw / lake.INGEST_FILE)
        rows = notes["rows"] if notes else _num_rows(raw / lake.DATA_FILE)
        if rows is not None:
            landed.add_metric([ds], rows)
        ok = _num_rows(lake.data_file(settings, lake.VALIDATED, ds))
        q_dir = lake.partition(settings, lake.QUARANTINE, ds)
        if ok is not None:
            validated.add_metric([ds], ok)
            bad.add_metric([ds], 0)
            summary = _read_json(lake.partition(settings, lake.VALIDATED, ds) / lake.VALIDATION_FILE)
        elif q_dir.exists():
            bad.add_metric([ds], 1)
            q_rows = _num_rows(q_dir / lake.DATA_FILE)
            if q_rows is not None:
                quarantined.add_metric([ds], q_rows)
            summary = _read_json(q_dir / lake.VALIDATION_FILE)
        else:
            summary = None
        if summary:
            evaluated.add_metric([ds], summary["evaluated"])
            counts: dict[tuple[str, str, str], int] = {}
            for f in [*summary["failed"], *summary["warnings"]]:
                column = f["column"] if isinstance(f["column"], str) or f["column"] is None else ",".join(f["column"])
                key = (f["expectation"], column or "", f["severity"])
                counts[key] = counts.get(key, 0) + 1
            for (exp, column, severity), n in sorted(counts.items()):
                failures.add_metric([ds, exp, column, severity], n)
        record = _read_json(lake.materialize_record(settings, ds))
        if record:
            m_rows.add_metric([ds], record["rows"])
            m_secs.add_metric([ds], record["seconds"])
        scored = lake.data_file(settings, lake.PREDICTIONS, ds)
        if scored.exists():
            import pyarrow.parquet as pq

            versions = pq.read_table(scored, columns=["model_version"]).column(0).value_counts()
            for item in versions.to_pylist():
                preds.add_metric([ds, str(item["values"])], item["counts"])
        result = _read_json(lake.monitoring(settings, ds) / lake.RESULT_FILE)
        if result:
            action.add_metric([ds, result["action"]], 1)
            if result.get("drift_share") is not None:
                share.add_metric([ds], result["drift_share"])
                dataset.add_metric([ds], float(bool(result.get("dataset_drift"))))
                columns = result.get("columns") or {}
                drifted.add_metric(
                    [ds], result.get("drifted_count", sum(bool(c.get("drifted")) for c in columns.values()))
                )
                for column, c in sorted(columns.items()):
                    col_drift.add_metric([ds, column], float(bool(c.get("drifted"))))
                    col_score.add_metric([ds, column], c["score"])
            for metric, value in sorted((result.get("performance_metrics") or {}).items()):
                if value is not None:
                    perf.add_metric([ds, metric], value)
            if result.get("performance") is not None:
                primary.add_metric([ds, settings.metric], result["performance"])
    floor = _gauge("performance_floor", "The floor of the primary metric under which the monitor retrains", ["metric"])
    floor.add_metric([settings.metric], settings.monitor_floor)
    latest = _gauge(
        "latest_partition_timestamp", "Start of the latest logical day present in the zone", ["zone"], "seconds"
    )
    written = _gauge(
        "latest_partition_written_timestamp", "When the zone's latest partition was written", ["zone"], "seconds"
    )
    for zone in FRESHNESS_ZONES:
        present = lake.dates(settings, zone)
        if present:
            latest.add_metric([zone], _day_seconds(present[-1]))
            path = lake.partition(settings, zone, present[-1])
            written.add_metric([zone], path.stat().st_mtime)
    checked = lake.monitoring_days(settings)
    if checked:
        latest.add_metric(["monitoring"], _day_seconds(checked[-1]))
        written.add_metric(["monitoring"], (lake.monitoring(settings, checked[-1]) / lake.RESULT_FILE).stat().st_mtime)
    yield from (landed, validated, quarantined, bad, evaluated, failures, m_rows, m_secs, preds)
    yield from (share, drifted, dataset, col_drift, col_score, perf, primary, floor, action, latest, written)
    yield _exported("lake", now)


# ------------------------------------------------------------------------------------------ the registry


def registry_metrics(settings: Settings, now: float | None = None) -> Iterator[Metric]:
    """Training runs by trigger, gate decisions by outcome, rollbacks, and the champion: its version and
    when it was trained. Reads the MLflow tracking server / registry (runs and versions searched twice: the
    shared ``registry.training_runs`` and once more for end times and rollback tags; cheap next to a DAG run)."""
    from airloop.registry import CHAMPION, client, training_runs, version_by_alias

    runs = training_runs(settings)
    trained = CounterMetricFamily(
        PREFIX + "training_runs", "Training runs recorded in MLflow, by trigger", labels=["trigger"]
    )
    for trigger in sorted({r["trigger"] for r in runs}):
        trained.add_metric([trigger], sum(r["trigger"] == trigger for r in runs))
    # a gauge: a version's decision changes (awaiting_approval -> promoted, canary -> withdrawn), so a count
    # by decision goes down as well as up
    decisions = _gauge("gate_decisions", "Registered versions by the gate's current decision on them", ["decision"])
    gated = [r["gate"] for r in runs if r["version"] is not None]
    for decision in sorted({g or "undecided" for g in gated}):
        decisions.add_metric([decision], sum((g or "undecided") == decision for g in gated))
    c = client(settings)
    versions = c.search_model_versions(f"name='{settings.registered_model}'")
    rolled = [mv.tags["airloop.rollback.at"] for mv in versions if "airloop.rollback.at" in mv.tags]
    rollbacks = CounterMetricFamily(
        PREFIX + "rollbacks", "Versions given the champion alias back by a rollback (the latest record of each)"
    )
    rollbacks.add_metric([], len(rolled))
    last_rollback = _gauge("last_rollback_timestamp", "When the latest rollback happened", unit="seconds")
    if rolled:
        last_rollback.add_metric([], max(datetime.fromisoformat(t).timestamp() for t in rolled))
    last_training = _gauge(
        "last_training_timestamp", "When the latest training run ended, by its trigger", ["trigger"], "seconds"
    )
    mlflow_runs = {r.info.run_id: r for r in _runs(c, settings, [r["run_id"] for r in runs])}
    for trigger in sorted({r["trigger"] for r in runs}):
        ends = [_ended(mlflow_runs.get(r["run_id"])) for r in runs if r["trigger"] == trigger]
        if any(ends):
            last_training.add_metric([trigger], max(e for e in ends if e))
    champion = _gauge("champion_version", "The registered version holding the champion alias")
    champ_trained = _gauge("champion_trained_timestamp", "When the champion's training run ended", unit="seconds")
    champ_window = _gauge(
        "champion_window_end_timestamp", "The last day of the champion's training window", unit="seconds"
    )
    champ = version_by_alias(settings, CHAMPION)
    if champ is not None:
        champion.add_metric([], float(champ.version))
        run = mlflow_runs.get(champ.run_id) or c.get_run(champ.run_id)
        if _ended(run):
            champ_trained.add_metric([], _ended(run))
        window = next((r["window"] for r in runs if r["run_id"] == champ.run_id), None)
        if window and window[1]:
            champ_window.add_metric([], _day_seconds(window[1]))
    yield from (trained, decisions, rollbacks, last_rollback, last_training, champion, champ_trained, champ_window)
    yield _exported("registry", now)


def _runs(c: Any, settings: Settings, run_ids: list[str]) -> Iterable[Any]:
    """The MLflow runs of the training experiment (none to search when no training run is recorded)."""
    exp = c.get_experiment_by_name(settings.experiment_name)
    return c.search_runs([exp.experiment_id]) if exp is not None and run_ids else []


def _ended(run: Any) -> float | None:
    if run is None:
        return None
    millis = run.info.end_time or run.info.start_time
    return millis / 1000 if millis else None


def _exported(part: str, now: float | None) -> GaugeMetricFamily:
    name, doc = f"{part}_metrics_exported_timestamp", f"When the {part} metrics were read from airloop's state"
    stamp = _gauge(name, doc, unit="seconds")
    stamp.add_metric([], time.time() if now is None else now)
    return stamp


# ------------------------------------------------------------------------------------- exposition


PARTS: dict[str, tuple[str, Callable[..., Iterator[Metric]]]] = {
    "lake": (LAKE_FILE, lake_metrics),
    "registry": (REGISTRY_FILE, registry_metrics),
}


class _Snapshot(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def registry_of(settings: Settings, parts: Iterable[str] = tuple(PARTS)) -> CollectorRegistry:
    """A prometheus-client registry holding one snapshot of the given parts (``lake``, ``registry``)."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown metrics parts {unknown}; choose from {sorted(PARTS)}")
    registry = CollectorRegistry(auto_describe=False)
    metrics = [m for part in parts for m in PARTS[part][1](settings)]
    registry.register(_Snapshot(metrics))
    return registry


def exposition(settings: Settings, parts: Iterable[str] = tuple(PARTS)) -> str:
    """The metrics in Prometheus' text exposition format (``airloop metrics``)."""
    from prometheus_client import generate_latest

    return generate_latest(registry_of(settings, parts)).decode()


def write_textfiles(settings: Settings, parts: Iterable[str] = tuple(PARTS)) -> list[Path]:
    """Write each part to its ``.prom`` file under ``settings.metrics_dir`` atomically (what node-exporter's
    textfile collector reads); return the paths."""
    from prometheus_client import write_to_textfile

    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for part in parts:
        path = settings.metrics_dir / PARTS[part][0]
        write_to_textfile(str(path), registry_of(settings, [part]))  # a temp file, then os.replace
        out.append(path)
    return out
