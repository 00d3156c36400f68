"""End to end: the real DAGs, run with dag.test() over simulated days on a temp directory."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from airloop import lake
from live_airflow import body_text, smtp_env

pytestmark = pytest.mark.slow

START = date(2026, 1, 1)
DAYS = 8
BAD_DAY, SHIFT_DAY, LAST_DAY = "2026-01-03", "2026-01-06", "2026-01-08"
# drift must persist for two consecutive checks (AIRLOOP_DRIFT_PERSIST_CHECKS): the retrain comes a day later
RETRAIN_DAY = "2026-01-07"
# alert recipients per kind (airloop_alert_emails_<kind>); failures and rollbacks go to the default list
TO = {
    "": "oncall@example.com",
    "quarantine": "data-team@example.com",
    "retrain": "ml-team@example.com",
    "promotion": "ml-lead@example.com",
    "drift": "ml-watch@example.com",
}


@pytest.fixture(scope="module")
def lifecycle(airflow_runs, tmp_path_factory, inbox):
    from airloop.config import get_settings
    from airloop.simulate import Scenario, simulate
    from airloop_tools.runner import run_days

    with pytest.MonkeyPatch.context() as mp:
        for key, value in smtp_env(inbox, TO).items():  # the real SMTP server on loopback
            mp.setenv(key, value)
        mp.setenv("AIRLOOP_HOME", str(tmp_path_factory.mktemp("lifecycle") / "airloop"))
        mp.setenv("AIRLOOP_MIN_TRAIN_DAYS", "4")
        mp.setenv("AIRLOOP_RETRAIN_COOLDOWN_DAYS", "2")
        # an 8-day run: a short current window and no wait for a week of the new regime (tests/test_drift_policy.py
        # runs the default policy over months)
        mp.setenv("AIRLOOP_DRIFT_CURRENT_DAYS", "3")
        mp.setenv("AIRLOOP_DRIFT_SETTLE_DAYS", "1")
        settings = get_settings()
        scenarios = [
            Scenario.parse(f"schema_break@{BAD_DAY}:{BAD_DAY}"),
            Scenario.parse(f"covariate_shift@{SHIFT_DAY}"),
        ]
        simulate(START, DAYS, settings, scenarios)
        log = {entry["ds"]: entry for entry in run_days(START, DAYS)}
        yield settings, log


def _task_states(dag_id: str, ds: str, tries: bool = False) -> dict[str, str]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    when = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    with create_session() as session:
        dr = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.logical_date == when).one()
        tis = dr.get_task_instances(session=session)
        return {ti.task_id: ti.try_number if tries else str(ti.state) for ti in tis}


def _emails(inbox, *words: str) -> list:
    return [m for m in inbox.messages if all(w in m["subject"] for w in words)]


def test_good_days_are_ingested_validated_and_materialized(lifecycle):
    settings, log = lifecycle
    import json

    for ds in ["2026-01-01", "2026-01-02", "2026-01-04", LAST_DAY]:
        assert log[ds]["airloop_daily"] == "success"
        assert (lake.data_file(settings, "raw", ds)).exists()
        result = json.loads((lake.partition(settings, "validated", ds) / "validation.json").read_text())
        assert result["success"] is True and result["failed"] == []
        assert (lake.data_file(settings, "features", ds)).exists()


def test_bad_batch_is_quarantined_and_nothing_downstream_is_written(lifecycle):
    settings, log = lifecycle
    assert log[BAD_DAY]["airloop_daily"] == "failed"
    assert "monthly_charges" in (lake.partition(settings, "quarantine", BAD_DAY) / "REASON.txt").read_text()
    assert not lake.partition(settings, "validated", BAD_DAY).exists()
    assert not (lake.data_file(settings, "features", BAD_DAY)).exists()
    assert not lake.partition(settings, "predictions", BAD_DAY).exists()
    states = _task_states("airloop_daily", BAD_DAY)
    assert states["validate"] == "failed"
    assert states["materialize"] == states["score"] == "upstream_failed"
    # with the default 2 retries, a quarantined batch fails at once: retrying bad data cannot help
    assert _task_states("airloop_daily", BAD_DAY, tries=True)["validate"] == 1


def test_a_quarantined_day_sends_one_email_to_its_recipients(lifecycle, inbox):
    """The task's own callback emails; the DAG-level safety net, which also ran on the failed run, stays quiet."""
    (msg,) = _emails(inbox, "airloop_daily", BAD_DAY)
    assert msg["subject"] == f"[airloop] airloop_daily.validate batch {BAD_DAY} quarantined ({BAD_DAY})"
    assert msg["to"] == TO["quarantine"]
    body = body_text(msg)
    assert "blocking expectations failed" in body and "monthly_charges" in body and "airloop_release" in body
    assert "/dags/airloop_daily/runs/" in body and "/tasks/validate" in body


def test_a_failure_that_retries_sends_one_email_after_its_last_try(airflow_runs, inbox, tmp_path, monkeypatch):
    """A day with no landing batch, an ordinary error: ``ingest`` is tried 1 + AIRLOOP_TASK_RETRIES (2) times,
    with the backoff from AIRLOOP_TASK_RETRY_DELAY_SECONDS (1 s here), and only the final failure emails, once
    (no email per retry, none from the DAG-level safety net). Its own home: independent of ``lifecycle``."""
    from airloop_tools.runner import load_dags, run

    for key, value in smtp_env(inbox, TO).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path / "airloop"))
    monkeypatch.setenv("AIRLOOP_TASK_RETRY_DELAY_SECONDS", "1")
    day = "2026-02-20"
    dag = load_dags()["airloop_daily"]  # parsed with the settings above, as a DAG processor would
    assert dag.get_task("ingest").retries == 2
    assert run(dag, date.fromisoformat(day)) == "failed"
    assert _task_states("airloop_daily", day, tries=True)["ingest"] == 3
    assert _task_states("airloop_daily", day)["ingest"] == "failed"
    (msg,) = _emails(inbox, day)
    assert msg["subject"] == f"[airloop] airloop_daily.ingest failed for {day}" and msg["to"] == TO[""]
    assert f"FileNotFoundError: no landing batch for {day}" in body_text(msg)


def test_online_store_serves_a_known_entity(lifecycle):
    settings, _ = lifecycle
    from airloop.features import online_features

    batch = pd.read_parquet(lake.data_file(settings, "validated", LAST_DAY))
    row = batch.iloc[0]
    online = online_features(settings, [int(row["customer_id"])]).iloc[0]
    assert online["monthly_charges"] == pytest.approx(row["monthly_charges"])
    assert online["plan"] == row["plan"]


def test_champion_exists_and_predictions_carry_its_version(lifecycle):
    settings, _ = lifecycle
    from airloop.registry import version_by_alias

    champion = version_by_alias(settings, "champion")
    assert champion is not None
    assert champion.tags["airloop.gate.decision"] == "promoted"
    preds = pd.read_parquet(lake.data_file(settings, "predictions", LAST_DAY))
    assert set(preds["model_version"]) == {str(champion.version)}
    assert preds["score"].between(0, 1).all() and len(preds) == settings.rows_per_day
    # the newest day's online store agrees with the offline features scoring read (skew sample)
    skew = json.loads((lake.skew_report(settings, LAST_DAY)).read_text())
    assert skew["sampled"] == settings.skew_sample and skew["mismatches"] == []


def test_drift_produces_an_event_a_retrain_and_a_gate_decision(lifecycle):
    settings, log = lifecycle
    from airloop.policy import history
    from airloop.registry import client, version_by_alias
    from airloop.status import collect_status

    status = collect_status(settings)
    events = {e["ds"]: e for e in status["drift_events"]}
    assert all(ds >= SHIFT_DAY for ds in events), f"drift reported before the shift: {sorted(events)}"
    assert events[SHIFT_DAY]["action"] == "alert", "one drifted check is not enough to retrain"
    assert events[RETRAIN_DAY]["action"] == "retrain"
    retrains = [r for r in status["retrains"] if r["trigger"] == "retrain"]
    assert [r["trigger_ds"] for r in retrains] == [RETRAIN_DAY], "exactly one retrain; the cool-down stops repeats"
    assert retrains[0]["run_id"] in events[RETRAIN_DAY]["retrain_runs"]
    assert [t["conf"]["trigger"] for t in log[RETRAIN_DAY]["airloop_train"]] == ["retrain"]
    assert log[RETRAIN_DAY]["airloop_train"][0]["conf"]["causes"] == ["drift"]
    assert log[RETRAIN_DAY]["airloop_train"][0]["state"] == "success"
    # the retrain went through the gate, which compared it with the champion it would replace on the
    # same recent rows; the champion alias follows its decision
    mv = client(settings).get_model_version(settings.registered_model, retrains[0]["version"])
    results = {r["ds"]: r for r in history(settings)}  # the monitor's own records (status shows a summary)
    previous = results[RETRAIN_DAY]["champion_version"]
    assert mv.tags["airloop.gate.champion_version"] == previous
    assert {"airloop.gate.challenger_roc_auc", "airloop.gate.champion_roc_auc"} <= set(mv.tags)
    # the data is seeded, so the decision is pinned: the retrain (trained 2 days into the shift) is not shown to
    # be non-inferior to the champion on the same rows: the lower end of the CI of the difference is below
    # the margin; the numbers on the version agree with the decision
    assert retrains[0]["gate"] == "refused" and mv.tags["airloop.gate.failed_rules"] == "non_inferiority"
    ci = float(mv.tags["airloop.gate.ci_low"]), float(mv.tags["airloop.gate.ci_high"])
    assert ci[0] < -settings.promotion_tolerance < ci[1]
    assert str(version_by_alias(settings, "champion").version) == previous
    # the same champion still drifts: the cool-down, doubled after the refusal, holds the next retrain back
    last = results[LAST_DAY]
    assert last["action"] == "cooldown" and "4-day cool-down (backed off after 1 refused" in last["reason"]


def test_the_cold_start_the_promotion_the_drift_alert_and_the_retrain_are_emailed(lifecycle, inbox):
    settings, _ = lifecycle
    from airloop.status import collect_status

    first = [r for r in collect_status(settings)["retrains"] if r["trigger"] == "bootstrap"][0]
    cold = _emails(inbox, "no champion yet (cold start) triggered a retrain")
    assert [m["to"] for m in cold] == [TO["retrain"]] and first["trigger_ds"] in cold[0]["subject"]
    # one promotion, the first model's (the drift retrain was refused), to the promotion list
    (promoted,) = _emails(inbox, "is the new champion")
    model, version = settings.registered_model, first["version"]
    assert promoted["subject"] == f"[airloop] {model} version {version} is the new champion (promoted)"
    assert promoted["to"] == TO["promotion"] and "PROMOTED" in body_text(promoted)
    # the first drifted check is an alert without a retrain (drift must persist), to the drift list
    (alert,) = _emails(inbox, "monitor alert without retrain", SHIFT_DAY)
    assert alert["to"] == TO["drift"] and "drift" in body_text(alert)
    (retrain,) = _emails(inbox, f"triggered a retrain ({RETRAIN_DAY})")
    assert retrain["subject"] == f"[airloop] data drift triggered a retrain ({RETRAIN_DAY})"
    assert retrain["to"] == TO["retrain"]
    body = body_text(retrain)
    assert f"retrain__{RETRAIN_DAY}" in body and "Share of drifted columns: " in body
    assert "/dags/airloop_monitor/runs/" in body


def test_monitor_branch_is_really_taken(lifecycle):
    shifted = _task_states("airloop_monitor", RETRAIN_DAY)
    assert shifted["trigger_retrain"] == "success"
    assert shifted["no_action"] == shifted["alert_only"] == "skipped"
    alert = _task_states("airloop_monitor", SHIFT_DAY)
    assert alert["alert_only"] == "success"
    assert alert["trigger_retrain"] == alert["no_action"] == "skipped"
    calm = _task_states("airloop_monitor", "2026-01-04")  # no champion yet, too few days
    assert calm["no_action"] == "success"
    assert calm["trigger_retrain"] == calm["alert_only"] == "skipped"


def test_rollback_dag_and_cli_move_the_champion_and_the_dag_emails(lifecycle, inbox):
    """The refused retrain is made champion by the airloop_rollback DAG (to_version), then the CLI's
    ``--to`` gives the alias back to the first champion."""
    settings, _ = lifecycle
    from airloop.registry import client, version_by_alias
    from airloop.status import collect_status
    from airloop_tools.cli import main
    from airloop_tools.runner import load_dags, run

    def alias(name: str) -> str | None:
        v = version_by_alias(settings, name)
        return str(v.version) if v else None

    original = alias("champion")
    (retrain,) = [r for r in collect_status(settings)["retrains"] if r["trigger"] == "retrain"]
    target = str(retrain["version"])
    conf = {"reason": "the retrain serves the new regime", "to_version": int(target)}
    assert run(load_dags()["airloop_rollback"], date(2026, 2, 2), conf=conf) == "success"
    assert (alias("champion"), alias("previous_champion")) == (target, original)
    tags = client(settings).get_model_version(settings.registered_model, target).tags
    assert tags["airloop.rollback.reason"] == conf["reason"] and tags["airloop.rollback.from_version"] == original
    assert tags["airloop.rollback.by"] == "dag_test"  # the run's triggering user
    (msg,) = _emails(inbox, "rolled back to version")
    assert msg["subject"] == f"[airloop] {settings.registered_model} rolled back to version {target} (was {original})"
    assert msg["to"] == TO[""] and "Reason: the retrain serves the new regime" in body_text(msg)

    assert main(["rollback", "--reason", "back to the first champion", "--to", original, "--json"]) == 0
    assert (alias("champion"), alias("previous_champion")) == (original, target)


def test_release_dag_puts_the_fixed_batch_back_and_scores_it(lifecycle):
    """Runs last: the operator fixes the quarantined day and triggers airloop_release with its date."""
    settings, _ = lifecycle
    from airloop.registry import version_by_alias
    from airloop_tools.runner import load_dags, run

    fixed = lake.data_file(settings, "quarantine", BAD_DAY)
    df = pd.read_parquet(fixed).rename(columns={"monthly_charge": "monthly_charges"})
    df["tenure_months"] = df["tenure_months"].str.removesuffix(" months").astype("int64")
    df.to_parquet(fixed)
    state = run(load_dags()["airloop_release"], date(2026, 2, 1), conf={"date": BAD_DAY, "path": None})
    assert state == "success"
    assert not lake.partition(settings, "quarantine", BAD_DAY).exists()
    assert (lake.data_file(settings, "validated", BAD_DAY)).exists()
    preds = pd.read_parquet(lake.data_file(settings, "predictions", BAD_DAY))
    assert set(preds["model_version"]) == {str(version_by_alias(settings, "champion").version)}
    # a past day is scored from its own point-in-time features, not today's online values
    feats = pd.read_parquet(lake.data_file(settings, "features", BAD_DAY))
    assert len(preds) == len(feats) and set(preds["event_timestamp"]) == set(feats["event_timestamp"])
