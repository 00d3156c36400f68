"""Run airloop's DAGs in-process with ``dag.test()``: the demo and the end-to-end tests use it.

It plays the scheduler's part for a sequence of simulated days: each day runs ``airloop_daily``
then ``airloop_monitor``, and any ``airloop_train`` run that the monitor triggered (queued in the
metadata DB by TriggerDagRunOperator) is then executed with its own logical date and conf.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from airloop import lake

DAILY, MONITOR, TRAIN = "airloop_daily", "airloop_monitor", "airloop_train"


def _quiet() -> None:
    """A quiet console: our progress lines, not the libraries' INFO logs and deprecation chatter."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("airflow", "great_expectations", "feast", "mlflow", "alembic", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("py.warnings", "mlflow.utils.environment"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.WARNING)


def load_dags() -> dict[str, Any]:
    """The project's DAGs, parsed from the configured dags folder."""
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=conf.get("core", "dags_folder"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.dags


def run(dag: Any, day: date | datetime, conf: dict | None = None) -> str:
    """Run one DAG for a logical date; return the final run state."""
    when = day if isinstance(day, datetime) else datetime(day.year, day.month, day.day, tzinfo=UTC)
    dr = dag.test(logical_date=when, run_conf=conf)
    return str(dr.state)


def run_triggered(dags: dict[str, Any], dag_id: str = TRAIN) -> list[dict]:
    """Execute the queued runs of ``dag_id`` (created by TriggerDagRunOperator); return what ran."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        queued = [
            (dr.run_id, dr.logical_date, dict(dr.conf or {}))
            for dr in session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.state == DagRunState.QUEUED)
        ]
    ran = []
    for run_id, logical_date, conf in sorted(queued, key=lambda q: q[1]):
        state = run(dags[dag_id], logical_date, conf)
        ran.append({"triggered_run_id": run_id, "conf": conf, "state": state})
    return ran


def run_days(start: date, days: int) -> list[dict]:
    """Run the daily chain and the monitor for ``days`` days from ``start``, plus triggered training."""
    _quiet()
    dags = load_dags()
    log = []
    for i in range(days):
        day = start + timedelta(days=i)
        entry = {"ds": day.isoformat(), DAILY: run(dags[DAILY], day), MONITOR: run(dags[MONITOR], day)}
        entry[TRAIN] = run_triggered(dags)
        print(_line(entry), flush=True)
        log.append(entry)
    return log


def _line(entry: dict) -> str:
    from airloop.config import get_settings

    settings = get_settings()
    ds = entry["ds"]
    parts = [f"[{ds}]"]
    if (lake.data_file(settings, "validated", ds)).exists():
        parts.append("ingested+validated")
    elif (lake.partition(settings, "quarantine", ds) / "REASON.txt").exists():
        parts.append("QUARANTINED (see REASON.txt)")
    if entry[DAILY] == "success" and (lake.data_file(settings, "features", ds)).exists():
        parts.append("features materialized")
    if (lake.data_file(settings, "predictions", ds)).exists():
        parts.append("scored")
    result = lake.monitoring(settings, ds) / "result.json"
    if result.exists():
        r = json.loads(result.read_text())
        parts.append(f"monitor: {r['action']} ({r['reason']})")
    for t in entry[TRAIN]:
        why = ": ".join(filter(None, [t["conf"].get("trigger", "manual"), ",".join(t["conf"].get("causes") or [])]))
        parts.append(f"training run ({why}): {t['state']}")
    return " | ".join(parts)


def stage_seconds() -> dict[str, float]:
    """Total run time of each ``dag.task`` over all runs in the metadata DB, slowest first."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import func

    with create_session() as session:
        rows = session.query(TaskInstance.dag_id, TaskInstance.task_id, func.sum(TaskInstance.duration)).group_by(
            TaskInstance.dag_id, TaskInstance.task_id
        )
        totals = {f"{d}.{t}": float(s or 0.0) for d, t, s in rows}
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> Path:
    """``make demo``: simulate, run every day through Airflow, print the summary, write it as JSON."""
    import argparse

    from airloop.config import get_settings
    from airloop.simulate import Scenario, simulate
    from airloop.status import collect_status, render_status

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", default="2026-01-01")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="name@START[:END], repeatable (default: schema_break on day 6, covariate_shift from day 9)",
    )
    args = parser.parse_args(argv)
    start = date.fromisoformat(args.start)
    scenarios = [
        Scenario.parse(s)
        for s in args.scenario
        or [
            f"schema_break@{start + timedelta(days=5)}:{start + timedelta(days=5)}",
            f"covariate_shift@{start + timedelta(days=8)}",
        ]
    ]
    settings = get_settings()
    simulate(start, args.days, settings, scenarios)
    print(f"Simulated {args.days} landing batches from {start} with {[s.name for s in scenarios]}", flush=True)
    t0 = time.perf_counter()
    days = run_days(start, args.days)
    status = collect_status(settings)
    status["demo_days"] = days
    status["wall_seconds"] = time.perf_counter() - t0
    status["stage_seconds"] = stage_seconds()
    path = settings.home / "demo_summary.json"
    path.write_text(json.dumps(status, indent=2, default=str) + "\n")
    print(render_status(status))
    top = ", ".join(f"{k} {v:.0f} s" for k, v in list(status["stage_seconds"].items())[:5])
    print(f"Ran {args.days} days in {status['wall_seconds']:.0f} s; slowest tasks (total): {top}")
    print(
        "Browse it: 'make airflow' (Airflow UI, http://127.0.0.1:8080, admin/admin) and 'make mlflow-ui' "
        "(MLflow UI, http://127.0.0.1:5000) on this same state. Summary JSON:"
    )
    print(path.resolve())
    return path


if __name__ == "__main__":
    main()
