"""Test set-up: a throwaway Airflow home (SQLite) configured before anything imports Airflow."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airloop-test-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "AIRLOOP_HOME": str(_AIRFLOW_HOME / "airloop-default"),
        # most tests build a model right after ingesting a few simulated days, whose batches carry the
        # label; the default, the delayed label feed, is what test_train's feed test, test_drift_policy and
        # test_your_data_e2e (a user's shell, no AIRLOOP_* set) run on
        "AIRLOOP_LABEL_SOURCE": "batch",
        # the DAGs' metrics export (a teardown task per run) is tested where it is turned on again: the DAG
        # structure in test_dags, real runs in test_monitor_e2e; elsewhere it would only add a task to each run
        "AIRLOOP_METRICS_EXPORT": "false",
    }
)
sys.path.insert(0, str(ROOT / "plugins"))


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings on a fresh AIRLOOP_HOME under tmp_path."""
    from airloop.config import get_settings

    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path / "airloop"))
    return get_settings()


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata DB (SQLite) for dag.test()."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return _AIRFLOW_HOME


@pytest.fixture(scope="module")
def airflow_runs(airflow_db):
    """The migrated DB with no airloop DAG runs left by an earlier module: the end-to-end modules
    simulate the same dates, and the monitor's trigger de-duplicates training runs by run id."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        for dr in session.query(DagRun).filter(DagRun.dag_id.like("airloop_%")):
            session.delete(dr)
    return airflow_db


@pytest.fixture(scope="module")
def inbox():
    """A real SMTP server on loopback for the module (tests/live_airflow.py's SmtpInbox)."""
    from live_airflow import SmtpInbox

    server = SmtpInbox()
    yield server
    server.stop()
