"""DAG integrity: importable, acyclic, tagged, retried, and cheap to parse."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ["great_expectations", "mlflow", "feast", "evidently", "sklearn"]
EXPECTED = {"airloop_daily", "airloop_monitor", "airloop_release", "airloop_rollback", "airloop_train"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_METRICS_EXPORT", "true")  # the default (the test session turns it off)
        return DagBag(dag_folder=str(ROOT / "dags"))


def test_dags_import_without_errors(dagbag):
    assert not dagbag.import_errors, f"fix these DAG import errors: {dagbag.import_errors}"
    assert set(dagbag.dags) == EXPECTED


def test_every_key_of_the_monitors_retrain_request_is_a_param_of_the_train_dag(dagbag):
    from airloop.policy import RetrainRequest

    missing = set(RetrainRequest.__annotations__) - set(dagbag.dags["airloop_train"].params)
    assert not missing, f"airloop_monitor passes {missing} in the conf: declare them as Params of airloop_train"


def test_dags_are_acyclic_tagged_owned_and_retried(dagbag):
    for dag_id, dag in dagbag.dags.items():
        dag.check_cycle()  # raises AirflowDagCycleException naming the cycle
        assert "airloop" in dag.tags, f"{dag_id}: add the 'airloop' tag"
        assert dag.doc_md, f"{dag_id}: give it a doc_md (module docstring)"
        assert dag.on_failure_callback, f"{dag_id}: use DAG_DEFAULTS (its failure callback alerts on killed tasks)"
        for t in dag.tasks:
            assert t.owner == "airloop", f"{dag_id}.{t.task_id}: owner"
            assert t.retries >= 1, f"{dag_id}.{t.task_id}: set retries (dag_defaults) so transient errors heal"
            assert t.on_failure_callback, f"{dag_id}.{t.task_id}: use dag_defaults() (failure alert email)"


def test_every_dag_ends_with_the_metrics_export_whatever_happened_upstream(dagbag, settings):
    """airloop.metrics' hook: a teardown task downstream of every other task (it runs after a quarantine or a
    failed training, and its own state never decides the run's), refreshing the textfiles its DAG changes."""
    parts = {
        "airloop_daily": ["lake"],
        "airloop_release": ["lake"],
        "airloop_monitor": ["lake", "registry"],
        "airloop_train": ["registry"],
        "airloop_rollback": ["registry"],
    }
    assert set(dagbag.dags) == EXPECTED == set(parts), dagbag.import_errors
    for dag_id, dag in dagbag.dags.items():
        export = dag.get_task("export_metrics")
        assert export.is_teardown and not export.on_failure_fail_dagrun, dag_id
        others = {t.task_id for t in dag.tasks} - {"export_metrics"}
        assert export.get_flat_relative_ids(upstream=True) == others, f"{dag_id}: wire every leaf to export_metrics"
        shutil.rmtree(settings.metrics_dir, ignore_errors=True)
        written = export.python_callable()  # the task's body, on the fixture's empty home
        assert sorted(Path(p).name for p in written) == sorted(f"airloop_{part}.prom" for part in parts[dag_id])
        assert sorted(p.name for p in settings.metrics_dir.iterdir()) == sorted(Path(p).name for p in written)


def test_materialization_maps_the_online_write_over_entity_hash_buckets(dagbag, monkeypatch):
    """Daily and release, with buckets (Redis's default, or a setting): the offline features once (one run at a
    time), then ``write_online`` mapped over the buckets ``materialize`` lists, then one summary (the features
    asset) that scoring waits for. One bucket (SQLite's default): a single ``materialize`` task."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    for dag_id in ("airloop_daily", "airloop_release"):
        dag = dagbag.dags[dag_id]
        assert "write_online" not in dag.task_ids, dag_id
        assert [o.name for o in dag.get_task("materialize").outlets] == ["airloop_features"], dag_id
    for env in ({"AIRLOOP_ONLINE_STORE": "redis"}, {"AIRLOOP_ONLINE_WRITE_BUCKETS": "3"}):
        with monkeypatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert not bag.import_errors, bag.import_errors
        for dag_id in ("airloop_daily", "airloop_release"):
            dag = bag.dags[dag_id]
            tasks = ("materialize", "write_online", "record_materialization")
            offline, write, record = (dag.get_task(t) for t in tasks)
            assert offline.max_active_tis_per_dag == 1, dag_id
            assert isinstance(write, MappedOperator) and not isinstance(offline, MappedOperator), dag_id
            assert write.upstream_task_ids == {"materialize"}, dag_id
            assert record.upstream_task_ids == {"materialize", "write_online"}, dag_id
            assert [o.name for o in record.outlets] == ["airloop_features"], dag_id
            assert "record_materialization" in dag.get_task("plan_scoring").upstream_task_ids, dag_id


def test_retries_backoff_schedule_and_start_date_come_from_the_settings(monkeypatch):
    """The README's promises: 2 retries with exponential backoff from 30 s; a data-interval timetable on the
    crons and time zone of the settings; any year's logical dates (AIRLOOP_START_DATE)."""
    from datetime import datetime, timedelta

    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import CronDataIntervalTimetable

    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    task = dags["airloop_daily"].get_task("ingest")
    assert (task.retries, task.retry_delay, task.retry_exponential_backoff) == (2, timedelta(seconds=30), True)
    assert task.max_retry_delay == timedelta(minutes=10), "README: doubled per retry, at most 10 minutes"
    # catchup stays off: unpausing a DAG whose start date is in 2000 must not schedule every day since
    assert set(dags) == EXPECTED and [d for d, dag in dags.items() if dag.catchup] == []
    daily, monitor = dags["airloop_daily"].timetable, dags["airloop_monitor"].timetable
    assert isinstance(daily, CronDataIntervalTimetable) and isinstance(monitor, CronDataIntervalTimetable)
    assert (daily.expression, monitor.expression, str(daily.timezone)) == ("0 0 * * *", "0 3 * * *", "UTC")
    assert dags["airloop_daily"].start_date.year <= 2000, "a history of any year runs"

    monkeypatch.setenv("AIRLOOP_NIGHTLY_CRON", "30 1 * * *")
    monkeypatch.setenv("AIRLOOP_TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("AIRLOOP_TASK_RETRIES", "5")
    monkeypatch.setenv("AIRLOOP_TASK_RETRY_DELAY_SECONDS", "2")
    monkeypatch.setenv("AIRLOOP_START_DATE", "2011-01-01")
    dag = DagBag(dag_folder=str(ROOT / "dags" / "airloop_daily.py")).dags["airloop_daily"]
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("30 1 * * *", "Europe/Paris")
    assert dag.get_task("ingest").retry_delay == timedelta(seconds=2)
    assert dag.get_task("ingest").retries == 5 and dag.start_date.replace(tzinfo=None) == datetime(2011, 1, 1)


def test_a_backfill_run_of_the_monitor_marks_its_retrain_request_unless_backfills_may_promote(dagbag, monkeypatch):
    """The monitor's ``request_retrain`` on real DagRun objects: a backfill run's request carries ``is_backfill``
    (the gate then refuses, ``tests/test_promote.py``), other runs' do not; ``AIRLOOP_BACKFILL_PROMOTES=true``
    lifts the mark, so a history backfill can produce a champion. ``airloop_train`` passes the flag to its gate."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    request = dagbag.dags["airloop_monitor"].get_task("request_retrain").python_callable
    check = {"ds": "2026-01-09", "action": "retrain", "causes": ["drift"], "reason": "drift on 2026-01-09"}

    def marked(run_type: DagRunType) -> bool:
        run = DagRun(dag_id="airloop_monitor", run_id=f"{run_type.value}__2026-01-09", run_type=run_type)
        return request(check, dag_run=run)["is_backfill"]

    assert marked(DagRunType.BACKFILL_JOB) is True
    assert marked(DagRunType.SCHEDULED) is False and marked(DagRunType.MANUAL) is False
    monkeypatch.setenv("AIRLOOP_BACKFILL_PROMOTES", "true")
    assert marked(DagRunType.BACKFILL_JOB) is False
    assert dagbag.dags["airloop_train"].params["is_backfill"] is False  # a run triggered by hand may promote


@pytest.mark.parametrize("image", ["", "airloop:0.1.0"], ids=["in-worker", "containerised"])
@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_does_not_import_heavy_libraries(path, image):
    """In both training modes (AIRLOOP_CONTAINER_IMAGE unset / set); the docker SDK only when the mode is on."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"print(json.dumps([m for m in {[*HEAVY, 'docker']!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "AIRLOOP_CONTAINER_IMAGE": image}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    expected = ["docker"] if image and path.name == "airloop_train.py" else []
    assert loaded == expected, f"{path.name} imports {loaded} at parse time: move the import inside the task function"


def test_approval_and_canary_add_their_tasks_when_switched_on(monkeypatch):
    """The optional steps exist only when their setting is on, and then parse (the live runs are in
    test_approval.py and, for the canary's stage code, test_canary.py)."""
    from datetime import timedelta

    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    assert "approval" not in dags["airloop_train"].task_ids and "judge_canary" not in dags["airloop_monitor"].task_ids
    monkeypatch.setenv("AIRLOOP_PROMOTION_APPROVAL", "required")
    monkeypatch.setenv("AIRLOOP_APPROVAL_TIMEOUT_HOURS", "2")
    monkeypatch.setenv("AIRLOOP_CANARY_FRACTION", "0.2")
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    train = bag.dags["airloop_train"]
    assert {"awaits_approval", "approval", "record_approval"} <= set(train.task_ids)
    approval = train.get_task("approval")
    assert approval.options == ["Approve", "Reject"] and approval.defaults == ["Reject"]
    assert approval.response_timeout == timedelta(hours=2)
    assert "judge_canary" in bag.dags["airloop_monitor"].task_ids
