"""The operator's ways in, each with the real client against one live Airflow (api-server, scheduler with
LocalExecutor, dag-processor) and a real SMTP server on loopback: settings loader, CLI backfill, REST API v2,
alert emails (a quarantined batch, a task killed by the OS) and the UI's trigger form in headless Chromium."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from airloop import lake
from live_airflow import ARTIFACTS, CHROMIUM, IN_CI, LiveAirflow, body_text

pytestmark = pytest.mark.slow

START, DAYS = date(2026, 1, 1), 7
LAST_DAY = (START + timedelta(days=DAYS - 1)).isoformat()
BAD_DAY = "2026-01-08"  # a schema break: quarantined
ALERTS_TO = "oncall@example.com"


@pytest.fixture(scope="module")
def live(tmp_path_factory, inbox):
    """One live Airflow for the module, with the project's settings loaded by ``airloop load-settings``."""
    from airloop.config import Settings
    from airloop.simulate import Scenario, simulate

    base = tmp_path_factory.mktemp("live")
    env = {
        "AIRLOOP_SMTP_PORT": str(inbox.port),
        "AIRLOOP_ALERT_EMAILS": ALERTS_TO,
        "AIRLOOP_TASK_RETRIES": "0",
        "AIRLOOP_ROWS_PER_DAY": "300",
        "AIRLOOP_CUSTOMERS": "1500",
        "AIRLOOP_MIN_TRAIN_DAYS": "4",
    }
    t0 = time.monotonic()

    def step(what: str) -> None:
        print(f"[live airflow +{time.monotonic() - t0:5.1f} s] {what}", flush=True)

    airflow = LiveAirflow(base, env)
    settings = Settings(home=base / "airloop", rows_per_day=300, customers=1500)
    simulate(START, DAYS + 1, settings, [Scenario.parse(f"schema_break@{BAD_DAY}:{BAD_DAY}")])
    # unpausing a nightly DAG (catchup off) also runs its latest interval: give it last night's batch
    simulate(datetime.now(UTC).date() - timedelta(days=1), 1, settings, [])
    step("simulated the batches")
    airflow.migrate()
    airflow.cli("airloop", "load-settings")
    step("metadata DB migrated, settings loaded")
    airflow.start()
    try:
        step(f"api-server answers on {airflow.url}")
        airflow.wait_for_dags(["airloop_daily", "airloop_train", "airloop_release", "airloop_monitor"])
        step("DAGs parsed")
        for dag_id in ("airloop_daily", "airloop_train", "airloop_release"):
            airflow.unpause(dag_id)
        airflow.settings = settings
        yield airflow
    finally:
        airflow.stop()


def _snapshot(live: LiveAirflow) -> dict:
    conn = live.get("/api/v2/connections/smtp_default")
    variables = {v["key"]: v["value"] for v in live.get("/api/v2/variables")["variables"]}
    pools = {p["name"]: (p["slots"], p["description"]) for p in live.get("/api/v2/pools")["pools"]}
    return {"connection": conn, "variables": variables, "pools": pools}


def test_loading_airflow_settings_twice_gives_the_same_state(live, inbox):
    first = _snapshot(live)
    assert first["connection"]["port"] == inbox.port  # ${AIRLOOP_SMTP_PORT} came from the environment
    assert json.loads(first["connection"]["extra"])["disable_tls"] == "true"
    assert first["variables"]["airloop_alert_emails"] == ALERTS_TO
    assert first["pools"]["feast_online_writes"][0] == 1
    live.cli("airloop", "load-settings")
    assert _snapshot(live) == first


def test_cli_backfill_of_seven_days_gives_seven_runs_and_the_partitions(live):
    out = live.cli(
        "airflow", "backfill", "create", "--dag-id", "airloop_daily",
        "--from-date", START.isoformat(), "--to-date", LAST_DAY,
    )  # fmt: skip
    assert "error" not in out.stdout.lower(), out.stdout

    def backfill_runs() -> list[dict]:
        runs = live.get("/api/v2/dags/airloop_daily/dagRuns?limit=100&order_by=logical_date")["dag_runs"]
        return [r for r in runs if r["run_type"] == "backfill"]

    def finished() -> list[dict] | None:
        runs = backfill_runs()
        return runs if len(runs) == DAYS and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = live.wait(finished, 900, "7 backfill runs to finish", every=5)
    assert [r["state"] for r in runs] == ["success"] * DAYS, [(r["run_id"], r["state"]) for r in runs]
    days = [(START + timedelta(days=i)).isoformat() for i in range(DAYS)]
    assert [r["logical_date"][:10] for r in runs] == days

    # the steps that write shared stores (GX project, Feast registry/online store) ran one at a time; their
    # order does not matter: materializing an older day re-materializes through the newest one
    def overlapping(spans: list[dict]) -> int:
        spans = sorted(spans, key=lambda x: x["start_date"])
        return sum(a["end_date"] > b["start_date"] for a, b in zip(spans, spans[1:], strict=False))

    for task_id in ("validate", "materialize"):
        tis = [live.get(f"/api/v2/dags/airloop_daily/dagRuns/{r['dag_run_id']}/taskInstances/{task_id}") for r in runs]
        assert overlapping(tis) == 0, task_id
    # ... while the runs themselves did overlap (so the check above had something to hold back)
    assert overlapping(runs) >= 1, [(r["start_date"], r["end_date"]) for r in runs]
    settings = live.settings
    for ds in days:
        assert (lake.data_file(settings, "raw", ds)).exists(), ds
        assert (lake.data_file(settings, "validated", ds)).exists(), ds
        assert (lake.data_file(settings, "features", ds)).exists(), ds
    # a backfill of the daily chain trains nothing and promotes nothing; scoring waits for a champion
    for r in runs:
        assert live.task_states("airloop_daily", r["dag_run_id"])["score"] == "skipped"
    assert live.get("/api/v2/dags/airloop_train/dagRuns")["total_entries"] == 0, "a backfill trains nothing"
    from airloop.registry import client

    models = client(settings).search_registered_models()
    assert [mv for rm in models for mv in rm.latest_versions or []] == [], "and registers no model version"


def test_a_retrain_asked_for_by_a_monitor_backfill_never_promotes(live):
    """After the daily backfill: a backfill of the monitor over its last day finds no champion and enough
    days, so it triggers airloop_train; that training run is judged and refused, and no champion exists."""
    span = {"from_date": f"{LAST_DAY}T00:00:00Z", "to_date": f"{LAST_DAY}T12:00:00Z"}  # the monitor's run: 03:00
    # Airflow backfills scheduled DAGs only: airloop_train is reached through the monitor's trigger
    with pytest.raises(AssertionError, match="non-periodic schedule"):
        live.post("/api/v2/backfills", {"dag_id": "airloop_train", **span})
    run_id = f"retrain__{LAST_DAY}"

    def monitor_runs() -> list[dict]:
        return live.get("/api/v2/dags/airloop_monitor/dagRuns")["dag_runs"]

    # unpausing the monitor also starts its latest nightly interval (catchup off), which would ask for a
    # first model too: that run is marked done at once, and training waits until any request of it is dropped
    live.patch("/api/v2/dags/airloop_train", {"is_paused": True})
    backfill = live.post("/api/v2/backfills", {"dag_id": "airloop_monitor", **span})
    live.unpause("airloop_monitor")
    try:
        nightly = live.wait(
            lambda: [r for r in monitor_runs() if r["run_type"] == "scheduled"], 60, "the nightly monitor run", every=1
        )
        for r in nightly:
            live.patch(f"/api/v2/dags/airloop_monitor/dagRuns/{r['dag_run_id']}", {"state": "success"})
        runs = live.wait(
            lambda: (rs := monitor_runs()) and all(r["state"] in ("success", "failed") for r in rs) and rs,
            600,
            f"the monitor's backfill {backfill['id']} (and its nightly run) to finish",
            every=5,
        )
    finally:
        live.patch("/api/v2/dags/airloop_monitor", {"is_paused": True})
        for r in live.get("/api/v2/dags/airloop_train/dagRuns")["dag_runs"]:
            if r["dag_run_id"] != run_id:  # the nightly run's request
                live.delete(f"/api/v2/dags/airloop_train/dagRuns/{r['dag_run_id']}")
        live.unpause("airloop_train")
    (monitor_run,) = [r for r in runs if r["run_type"] == "backfill"]
    assert monitor_run["state"] == "success" and monitor_run["logical_date"][:10] == LAST_DAY
    assert live.wait_for_run("airloop_train", run_id, timeout=600) == "success"
    train_run = live.get(f"/api/v2/dags/airloop_train/dagRuns/{run_id}")
    # a run that TriggerDagRunOperator creates is no backfill run (Airflow 3.3: "operator_triggered"): the
    # request in its conf is what says where it came from
    assert train_run["run_type"] != "backfill" and train_run["conf"]["is_backfill"] is True
    assert train_run["conf"]["trigger"] == "bootstrap"
    assert live.task_states("airloop_train", run_id) == {"train": "success", "gate": "success"}
    from airloop.registry import training_runs, version_by_alias

    (trained,) = [r for r in training_runs(live.settings) if r["trigger_ds"] == LAST_DAY]
    assert trained["trigger"] == "bootstrap" and trained["version"] is not None
    assert (trained["gate"], trained["gate_reason"]) == ("refused", "backfill runs never promote")
    assert version_by_alias(live.settings, "champion") is None, "the first model of a backfill is no champion"


def test_rest_api_triggers_a_run_with_conf_and_the_quarantine_email_arrives(live, inbox):
    run = live.post(
        "/api/v2/dags/airloop_daily/dagRuns",
        {"logical_date": f"{BAD_DAY}T00:00:00Z", "conf": {"source": "local"}, "note": "REST API test"},
    )
    run_id = run["dag_run_id"]
    assert run["conf"] == {"source": "local"}
    assert live.wait_for_run("airloop_daily", run_id) == "failed"
    states = live.task_states("airloop_daily", run_id)
    assert states["ingest"] == "success" and states["validate"] == "failed"
    assert states["materialize"] == "upstream_failed"

    msg = inbox.wait_for(lambda m: "quarantined" in m["subject"] and BAD_DAY in m["subject"])
    assert msg["to"] == ALERTS_TO
    assert "airloop_daily" in msg["subject"] and "validate" in msg["subject"]
    body = body_text(msg)
    assert "blocking expectations failed" in body and "expect_" in body  # the failed GX expectations
    link = f"{live.url}/dags/airloop_daily/runs/{run_id.replace(':', '%3A').replace('+', '%2B')}/tasks/validate"
    assert link in body, body
    log = live.get(f"/api/v2/dags/airloop_daily/dagRuns/{run_id}/taskInstances/validate/logs/1")
    assert "quarantined" in json.dumps(log)


def test_a_task_killed_by_the_os_still_sends_an_alert(live, inbox):
    run = live.post("/api/v2/dags/airloop_train/dagRuns", {"logical_date": None, "conf": {"reason": "kill test"}})
    run_id = run["dag_run_id"]

    def running_pid() -> int | None:
        ti = live.get(f"/api/v2/dags/airloop_train/dagRuns/{run_id}/taskInstances/train")
        return ti["pid"] if ti["state"] == "running" and ti.get("pid") else None

    pid = live.wait(running_pid, 180, "the train task to run", every=1)
    os.kill(pid, signal.SIGKILL)  # what the OOM killer does
    assert live.wait_for_run("airloop_train", run_id) == "failed"
    msg = inbox.wait_for(lambda m: "airloop_train.train" in m["subject"], timeout=180)
    assert "failed" in msg["subject"]
    body = body_text(msg)
    assert "killed by the OS" in body and "/dags/airloop_train/runs/" in body


def test_ui_trigger_form_runs_training_with_params(live):
    from playwright.sync_api import expect, sync_playwright

    if CHROMIUM is None:
        message = "no chromium on the PATH: install Debian's chromium (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    before = {r["dag_run_id"] for r in live.get("/api/v2/dags/airloop_train/dagRuns")["dag_runs"]}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{live.url}/")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", "admin")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
        page.goto(f"{live.url}/dags/airloop_train")
        page.get_by_test_id("trigger-dag-button").click()
        expect(page.get_by_text("Run Parameters")).to_be_visible(timeout=30_000)
        # the typed Params: a date picker, a number field, the free-text reason
        page.fill("#element_end_date", LAST_DAY)
        page.fill("input[name=element_window_days]", "6")
        page.fill("#element_reason", "retrain by hand from the UI")
        page.screenshot(path=str(ARTIFACTS / "ui-trigger-form.png"), full_page=True)
        page.get_by_test_id("trigger-dag-submit").click()
        runs = live.wait(lambda: _new_runs(live, before), 60, "the UI to create the run", every=1)
        run_id = runs[0]["dag_run_id"]
        assert runs[0]["conf"]["end_date"] == LAST_DAY and runs[0]["conf"]["window_days"] == 6
        assert runs[0]["conf"]["reason"] == "retrain by hand from the UI"
        assert live.wait_for_run("airloop_train", run_id, timeout=900) == "success"
        page.goto(f"{live.url}/dags/airloop_train/runs/{run_id}")
        expect(page.get_by_text("success").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-run-succeeded.png"), full_page=True)
        browser.close()
    assert live.task_states("airloop_train", run_id) == {"train": "success", "gate": "success"}


def _new_runs(live: LiveAirflow, before: set[str]) -> list[dict]:
    return [r for r in live.get("/api/v2/dags/airloop_train/dagRuns")["dag_runs"] if r["dag_run_id"] not in before]
