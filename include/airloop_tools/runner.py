"""Run airloop's DAGs in-process with ``dag.test()``: ``airloop run`` (your landing days), ``airloop demo``
(the simulator's) and the end-to-end tests use it.

It plays the scheduler's part for a sequence of days: each day runs ``airloop_daily`` then
``airloop_monitor``, and any ``airloop_train`` run that the monitor triggered (queued in the metadata DB
by TriggerDagRunOperator) is then executed with its own logical date and conf. These are manual runs,
not backfill runs: the gate may promote, so replaying history can produce a first champion.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import structlog

from airloop import lake
from airloop.config import PROJECT_DIR, Settings, get_settings

DAILY, MONITOR, TRAIN = "airloop_daily", "airloop_monitor", "airloop_train"


def _quiet() -> None:
    """A quiet console: our progress lines, not the libraries' INFO logs and deprecation chatter. Airflow
    sets its own warning filters and log levels when imported: import it first, then override them."""
    import airflow.settings  # noqa: F401

    warnings.simplefilter("ignore")  # libraries' deprecation chatter, printed by Airflow as [warning] lines
    for name in ("airflow", "great_expectations", "feast", "mlflow", "alembic", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # dag.test() warns "No tasks to run" when scoring is skipped (no champion yet): the scheduler just skips
    for name in ("py.warnings", "mlflow.utils.environment", "airflow.sdk.definitions.dag"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.WARNING)
    # a quarantined batch is a designed outcome that the day's line reports: not an [error] with a traceback
    config = structlog.get_config()
    if _drop_quarantine_traceback not in config["processors"]:
        structlog.configure(processors=[_drop_quarantine_traceback, *config["processors"]])


def _drop_quarantine_traceback(logger: Any, method_name: str, event_dict: dict) -> dict:
    """structlog processor: drop the task runner's "Task failed with exception" for a quarantined batch
    (its reason is in REASON.txt, the alert email and the day's console line); every other error stays."""
    from airloop.quarantine import BatchQuarantined

    if method_name in ("exception", "error") and event_dict.get("exc_info"):
        error = sys.exc_info()[1]
        while error is not None:
            if isinstance(error, BatchQuarantined):
                raise structlog.DropEvent
            error = error.__cause__
    return event_dict


DEMO_MARKER = ".airloop-demo"  # in a home the demo made: the demo may wipe it, never another


def prepare_airflow(settings: Settings) -> None:
    """Point Airflow at this project (unless the environment already does, as ``make`` does) and migrate
    its metadata DB when it is a SQLite file that does not exist yet. Call before importing Airflow."""
    defaults = {
        "AIRFLOW_HOME": str(settings.home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_DIR / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "PYTHONWARNINGS": "ignore",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "FEAST_USAGE": "False",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    plugins = os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"]
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    home = Path(os.environ["AIRFLOW_HOME"])
    uses_default_db = not any(k.startswith("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") for k in os.environ)
    if uses_default_db and not (home / "airflow.db").exists():
        home.mkdir(parents=True, exist_ok=True)
        print(f"Initialising Airflow's metadata DB (SQLite) in {home} ...", flush=True)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


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


def run_dates(days: list[date], force: bool = False) -> list[dict]:
    """Run the daily chain and the monitor for each day, in order, plus the training they trigger. A day
    whose monitor check is recorded already is skipped (resumable) unless ``force``."""
    _quiet()
    settings = get_settings()
    dags = load_dags()
    log = []
    for day in days:
        ds = day.isoformat()
        if not force and (lake.monitoring(settings, ds) / lake.RESULT_FILE).exists():
            print(f"[{ds}] done already (skipped; --force runs it again)", flush=True)
            continue
        entry = {"ds": ds, DAILY: run(dags[DAILY], day), MONITOR: run(dags[MONITOR], day)}
        entry[TRAIN] = run_triggered(dags)
        entry["rss_mb"] = round(psutil.Process().memory_info().rss / 2**20)  # memory stays flat over a long run
        print(_line(entry), flush=True)
        log.append(entry)
    return log


def run_days(start: date, days: int) -> list[dict]:
    """Run ``days`` consecutive days from ``start`` (see :func:`run_dates`)."""
    return run_dates([start + timedelta(days=i) for i in range(days)], force=True)


def landing_days(settings: Settings, start: date, end: date) -> list[date]:
    """The days from ``start`` to ``end`` to run: those with a landing folder (every day for S3)."""
    every = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    if settings.source == "s3":
        return every
    present = set(lake.landing_dates(settings))
    return [d for d in every if d.isoformat() in present]


def run_range(start: date, end: date, force: bool = False) -> dict:
    """``airloop run``: your landing days from ``start`` to ``end`` through the real DAGs, then the summary.
    Never simulates, never deletes landing data."""
    settings = get_settings()
    days = landing_days(settings, start, end)
    if not days:
        raise FileNotFoundError(
            f"no landing days between {start} and {end} under {settings.landing_dir} (expected folders "
            f"{lake.landing(settings, start.isoformat()).name}/ with *.csv or *.parquet files)"
        )
    prepare_airflow(settings)
    print(f"Running {len(days)} landing days {days[0]}..{days[-1]} in {settings.home}", flush=True)
    t0 = time.perf_counter()
    log = run_dates(days, force)
    return summarize(settings, log, time.perf_counter() - t0)


def summarize(settings: Settings, log: list[dict], seconds: float) -> dict:
    """Print the status of the loop after a run and write it as JSON under the home; return it."""
    from airloop.status import collect_status, render_status

    status = collect_status(settings)
    status["days"] = log
    status["wall_seconds"] = seconds
    status["stage_seconds"] = stage_seconds()
    status["disk_mb"] = disk_mb(settings)
    path = settings.home / "run_summary.json"
    path.write_text(json.dumps(status, indent=2, default=str) + "\n")
    print(render_status(status))
    top = ", ".join(f"{k} {v:.0f} s" for k, v in list(status["stage_seconds"].items())[:5])
    print(f"Ran {len(log)} days in {seconds:.0f} s; slowest tasks (total): {top}")
    disk = status["disk_mb"]
    print(
        f"Disk: {disk['total']:.0f} MB under the home ({', '.join(f'{k} {v:.0f}' for k, v in disk['parts'].items())}); "
        f"memory of this process: {log[-1]['rss_mb'] if log else '-'} MB"
    )
    print(
        "Browse it: 'make airflow' (Airflow UI, http://127.0.0.1:8080, admin/admin) and 'make mlflow-ui' "
        "(MLflow UI, http://127.0.0.1:5000) on this same state. Summary JSON:"
    )
    print(path.resolve())
    status["summary_path"] = str(path.resolve())
    return status


def disk_mb(settings: Settings) -> dict:
    """Disk used under the home, in MB: the total and its parts of at least 1 MB (lake zones, monitoring,
    MLflow, Airflow...), largest first."""

    def size(path: Path) -> float:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20

    top = [p for p in settings.home.iterdir() if p.is_dir() and p != settings.lake_dir]
    zones = [z for z in settings.lake_dir.iterdir() if z.is_dir()] if settings.lake_dir.exists() else []
    parts = {str(p.relative_to(settings.home)): size(p) for p in top + zones}
    shown = dict(sorted(((k, v) for k, v in parts.items() if v >= 1), key=lambda kv: -kv[1]))
    return {"total": sum(parts.values()), "parts": shown}


def _line(entry: dict) -> str:
    from airloop.config import get_settings

    settings = get_settings()
    ds = entry["ds"]
    parts = [f"[{ds}]"]
    reason = lake.partition(settings, lake.QUARANTINE, ds) / lake.REASON_FILE
    if (lake.data_file(settings, lake.VALIDATED, ds)).exists():
        parts.append("ingested+validated")
    elif reason.exists():
        parts.append(f"QUARANTINED (see {reason})")
    if entry[DAILY] != "success" and not reason.exists():
        parts.append(f"{DAILY} {entry[DAILY]} (its error is printed above)")
    if entry[DAILY] == "success" and (lake.data_file(settings, lake.FEATURES, ds)).exists():
        parts.append("features materialized")
    if (lake.data_file(settings, lake.PREDICTIONS, ds)).exists():
        parts.append("scored")
    result = lake.monitoring(settings, ds) / lake.RESULT_FILE
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


def fresh_demo_home(settings: Settings) -> None:
    """Empty the home for the demo, only if the demo made it (or it holds nothing): your data is safe."""
    home = settings.home
    if home.exists() and any(home.iterdir()) and not (home / DEMO_MARKER).exists():
        raise FileExistsError(
            f"{home} holds state the demo did not make (your landing data?): the demo starts from an empty home "
            f"and will not delete it. Run it elsewhere: AIRLOOP_HOME=/tmp/airloop-demo make demo"
        )
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / DEMO_MARKER).write_text("made by `airloop demo`: the next demo deletes this folder\n")


def demo(start: date, days: int, scenarios: list[str] | None = None) -> dict:
    """``make demo``: a fresh demo home, simulated landing days, every day through Airflow, the summary."""
    from airloop.simulate import Scenario, simulate

    settings = get_settings()
    fresh_demo_home(settings)
    prepare_airflow(settings)
    chosen = [
        Scenario.parse(s)
        for s in scenarios
        or [
            f"schema_break@{start + timedelta(days=5)}:{start + timedelta(days=5)}",
            f"covariate_shift@{start + timedelta(days=8)}",
        ]
    ]
    simulate(start, days, settings, chosen)
    print(f"Simulated {days} landing batches from {start} with {[s.name for s in chosen]}", flush=True)
    t0 = time.perf_counter()
    return summarize(settings, run_days(start, days), time.perf_counter() - t0)
