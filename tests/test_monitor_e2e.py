"""End to end through the real DAGs: concept drift (features stable, labels change) is caught by the
performance path once the delayed labels arrive; the reports and numbers are persisted and logged to
MLflow; a training run already in flight suppresses a new trigger."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from airloop import lake
from live_airflow import body_text, smtp_env

pytestmark = pytest.mark.slow

START, DAYS = date(2026, 1, 1), 8
DRIFT_DAY = "2026-01-06"  # the rules change; its labels arrive a day later (AIRLOOP_LABEL_DELAY_DAYS=1)
CAUGHT_DAY = "2026-01-07"


@pytest.fixture(scope="module")
def concept(airflow_runs, tmp_path_factory, inbox):
    from airloop.config import get_settings
    from airloop.simulate import Scenario, simulate
    from airloop_tools.runner import run_days

    with pytest.MonkeyPatch.context() as mp:
        for key, value in smtp_env(inbox, {"": "oncall@example.com", "retrain": "ml-team@example.com"}).items():
            mp.setenv(key, value)
        mp.setenv("AIRLOOP_HOME", str(tmp_path_factory.mktemp("concept") / "airloop"))
        mp.setenv("AIRLOOP_MIN_TRAIN_DAYS", "4")
        mp.setenv("AIRLOOP_RETRAIN_COOLDOWN_DAYS", "3")
        mp.setenv("AIRLOOP_METRICS_EXPORT", "true")  # the default (the test session turns it off)
        settings = get_settings()
        simulate(START, DAYS, settings, [Scenario.parse(f"concept_drift@{DRIFT_DAY}")])
        log = {entry["ds"]: entry for entry in run_days(START, DAYS)}
        yield settings, log, mp


def _result(settings, ds: str) -> dict:
    return json.loads((lake.monitoring(settings, ds) / "result.json").read_text())


def _task_states(dag_id: str, ds: str) -> dict[str, str]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    when = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    with create_session() as session:
        dr = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.logical_date == when).one()
        return {ti.task_id: str(ti.state) for ti in dr.get_task_instances(session=session)}


def test_stable_period_triggers_nothing(concept):
    settings, log, _ = concept
    calm = _result(settings, "2026-01-05")
    assert calm["action"] == "none" and calm["dataset_drift"] is False
    assert [t["conf"]["trigger"] for t in log["2026-01-05"]["airloop_train"]] == []
    assert _result(settings, DRIFT_DAY)["action"] == "none", "the labels of the drifted day have not arrived yet"


def test_concept_drift_is_caught_by_the_performance_path_once_labels_arrive(concept):
    settings, log, _ = concept
    caught = _result(settings, CAUGHT_DAY)
    assert caught["dataset_drift"] is False, "the features did not move"
    assert caught["performance_days"][-1] == DRIFT_DAY
    assert caught["performance"] < settings.monitor_floor <= _result(settings, DRIFT_DAY)["performance"]
    assert caught["action"] == "retrain" and caught["causes"] == ["performance"]
    runs = log[CAUGHT_DAY]["airloop_train"]
    assert [(t["conf"]["trigger"], t["conf"]["causes"], t["state"]) for t in runs] == [
        ("retrain", ["performance"], "success")
    ]
    assert "roc_auc" in runs[0]["conf"]["reason"] and "floor" in runs[0]["conf"]["reason"]
    states = _task_states("airloop_monitor", CAUGHT_DAY)
    assert states["trigger_retrain"] == "success" and states["alert_only"] == states["no_action"] == "skipped"
    # no second retrain in the run: the cool-down (or a new champion without labelled days yet) holds it
    retrains = [ds for ds, entry in log.items() for t in entry["airloop_train"] if t["conf"]["trigger"] == "retrain"]
    assert retrains == [CAUGHT_DAY]


def test_the_retrain_email_says_it_was_the_performance_not_drift(concept, inbox):
    settings, _, _ = concept
    (msg,) = [m for m in inbox.messages if f"triggered a retrain ({CAUGHT_DAY})" in m["subject"]]
    assert msg["subject"] == f"[airloop] performance below the floor triggered a retrain ({CAUGHT_DAY})"
    assert msg["to"] == "ml-team@example.com"
    body = body_text(msg)
    assert "data drift" not in body and "roc_auc" in body and f"retrain__{CAUGHT_DAY}" in body


def test_reports_numbers_and_mlflow_metrics_are_persisted(concept):
    settings, _, _ = concept
    from airloop.registry import client

    caught = _result(settings, CAUGHT_DAY)
    for name in ("data", "predictions", "performance"):
        html = lake.monitoring(settings, CAUGHT_DAY) / f"{name if name != 'data' else 'report'}.html"
        assert caught["reports"][name] == str(html) and html.stat().st_size > 10_000
    assert {"score", "method", "threshold", "drifted"} <= set(caught["columns"]["monthly_charges"])
    assert {"roc_auc", "accuracy", "f1"} <= set(caught["performance_metrics"])
    table = (settings.monitoring_dir / "history.csv").read_text().splitlines()
    assert table[0].startswith("ds,action,champion_version,drift_share") and len(table) == DAYS + 1
    c = client(settings)
    exp = c.get_experiment_by_name(f"{settings.experiment_name}_monitoring")
    (run,) = c.search_runs([exp.experiment_id], filter_string=f"tags.`airloop.monitor_ds` = '{CAUGHT_DAY}'")
    assert run.data.metrics["performance"] == pytest.approx(caught["performance"])
    assert run.data.tags["airloop.model_version"] == caught["champion_version"]
    mv = c.get_model_version(settings.registered_model, caught["champion_version"])
    assert mv.tags["airloop.monitor.last_ds"] >= CAUGHT_DAY


def test_each_dag_run_leaves_the_prometheus_textfiles_of_the_state(concept):
    """The DAGs' export_metrics teardowns wrote $AIRLOOP_HOME/metrics/*.prom: the lake's with every day of the
    run (the last written by the last day's monitor), the registry's with the training runs the monitor
    triggered and the champion they left; the same text `airloop.metrics` reads from the state now."""
    from prometheus_client.parser import text_string_to_metric_families

    from airloop.metrics import LAKE_FILE, REGISTRY_FILE
    from airloop.registry import CHAMPION, training_runs, version_by_alias

    settings, log, _ = concept
    files = {p.name: p.read_text() for p in settings.metrics_dir.iterdir()}
    assert sorted(files) == sorted([LAKE_FILE, REGISTRY_FILE])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for text in files.values()
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for ds in log:
        rows = len(lake.read(settings, lake.VALIDATED, [ds]))
        assert samples[("airloop_rows_validated", (("ds", ds),))] == rows
        action = _result(settings, ds)["action"]
        assert samples[("airloop_monitor_action", (("action", action), ("ds", ds)))] == 1
    runs = training_runs(settings)
    triggers = {r["trigger"] for r in runs}
    assert triggers == {"bootstrap", "retrain"}
    for trigger in triggers:
        count = sum(r["trigger"] == trigger for r in runs)
        assert samples[("airloop_training_runs_total", (("trigger", trigger),))] == count
    assert samples[("airloop_champion_version", ())] == float(version_by_alias(settings, CHAMPION).version)


def test_a_training_run_in_flight_suppresses_a_new_trigger(concept):
    """Runs last: for a model with no champion yet (cold start would trigger training) while a
    training run is already queued, the monitor alerts and triggers nothing."""
    settings, _, mp = concept
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    from airloop_tools.runner import load_dags, run

    mp.setenv("AIRLOOP_MODEL_NAME", "airloop_churn_in_flight")
    queued = trigger_dag(
        "airloop_train", triggered_by=DagRunTriggeredByType.TEST, run_id="manual__in_flight", conf={"reason": "manual"}
    )
    try:
        assert run(load_dags()["airloop_monitor"], date.fromisoformat(CAUGHT_DAY)) == "success"
    finally:
        with create_session() as session:
            session.query(DagRun).filter(DagRun.run_id == queued.run_id).delete()
    again = _result(settings, CAUGHT_DAY)
    assert again["action"] == "alert" and again["causes"] == ["bootstrap"]
    assert "already queued or running" in again["reason"]
    states = _task_states("airloop_monitor", CAUGHT_DAY)
    assert states["alert_only"] == "success" and states["trigger_retrain"] == states["no_action"] == "skipped"
