"""Promotion approval, live: ``AIRLOOP_PROMOTION_APPROVAL=required`` on a real Airflow (api-server, scheduler,
dag-processor) and a real SMTP server. A person approves in the UI's Required Actions (headless Chromium),
another request is rejected through the HITL REST API (a user who is not an approver gets 403 first), and a
third gets no answer and times out. Each outcome is checked where a user reads it: the registry's aliases and
tags, and the emails. The same live Airflow then has its scheduler killed during a daily run."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import pytest

from live_airflow import ARTIFACTS, CHROMIUM, IN_CI, LiveAirflow, body_text

pytestmark = pytest.mark.slow

START, DAYS = date(2026, 1, 1), 7
LAST_DAY = (START + timedelta(days=DAYS - 1)).isoformat()
TRAIN = "airloop_train"
ALERTS_TO = "mlops@example.com"
USERS = {"admin": "admin", "carol": "carol-pw", "bob": "bob-pw"}  # carol and admin approve; bob may not
TIMEOUT_HOURS = 0.03  # 108 s: time to answer in a browser, short enough to wait out once


@pytest.fixture(scope="module")
def live(tmp_path_factory, inbox):
    """A live Airflow with approval required, over seven days already ingested, validated and materialized
    (plain-Python stages: the daily DAG is tested elsewhere; here only airloop_train runs)."""
    from airloop.config import get_settings
    from airloop.features import materialize_features
    from airloop.ingest import ingest_batch
    from airloop.simulate import simulate
    from airloop.validate import validate_batch

    base = tmp_path_factory.mktemp("approval")
    env = {
        "AIRLOOP_PROMOTION_APPROVAL": "required",
        "AIRLOOP_APPROVERS": '["admin", "carol"]',
        "AIRLOOP_APPROVAL_TIMEOUT_HOURS": str(TIMEOUT_HOURS),
        "AIRLOOP_SMTP_PORT": str(inbox.port),
        "AIRLOOP_ALERT_EMAILS": ALERTS_TO,
        "AIRLOOP_TASK_RETRIES": "0",
        "AIRLOOP_ROWS_PER_DAY": "300",
        "AIRLOOP_CUSTOMERS": "1500",
        "AIRLOOP_MIN_TRAIN_DAYS": "4",
        "AIRLOOP_GATE_MIN_ROWS": "300",
        "AIRLOOP_GATE_BOOTSTRAP": "300",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:admin" for u in USERS),
    }
    airflow = LiveAirflow(base, env)
    (base / "passwords.json").write_text(json.dumps(USERS))
    with pytest.MonkeyPatch.context() as mp:  # the stages (and Feast's repo definitions) read the same home
        for key, value in airflow.env.items():
            if key.startswith("AIRLOOP_"):
                mp.setenv(key, value)
        settings = get_settings()
        simulate(START, DAYS + 1, settings)  # the last day is for the daily run of the scheduler test
        for i in range(DAYS):
            ds = (START + timedelta(days=i)).isoformat()
            ingest_batch(settings, ds)
            validate_batch(settings, ds)
            materialize_features(settings, ds)
    airflow.migrate()
    airflow.cli("airloop", "load-settings")
    airflow.start()
    try:
        airflow.wait_for_dags([TRAIN, "airloop_daily"])
        airflow.unpause(TRAIN)
        yield airflow
    finally:
        airflow.stop()


def _settings(live: LiveAirflow):
    from airloop.config import Settings

    return Settings(home=Path(live.env["AIRLOOP_HOME"]))


def _champion(live: LiveAirflow) -> str | None:
    from airloop.registry import CHAMPION, version_by_alias

    mv = version_by_alias(_settings(live), CHAMPION)
    return str(mv.version) if mv is not None else None


def _tags(live: LiveAirflow, version: str) -> dict[str, str]:
    from airloop.registry import client

    s = _settings(live)
    return client(s).get_model_version(s.registered_model, version).tags


def _train_until_it_waits(live: LiveAirflow, run_id: str, settle: float = 15) -> dict:
    """Trigger a training run and wait until its approval task waits for a person; its gate's XCom.

    ``settle``: seconds to wait after that, as a person reading the request does. An answer within a second
    or two of the request races Airflow 3.3.2's LocalExecutor: the parked task's worker may report its exit
    after the answer re-queued the same try, and the scheduler then fails the resumed task as "killed
    externally" (seen once in CI: a REST rejection sent at once gave a failed run)."""
    live.post(f"/api/v2/dags/{TRAIN}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": {}})
    live.wait(
        lambda: (
            live.task_states(TRAIN, run_id).get("approval") == "awaiting_input"
            or live.run_state(TRAIN, run_id) in ("success", "failed")
        ),
        600,
        f"{run_id} to ask for approval",
        every=2,
    )
    assert live.task_states(TRAIN, run_id)["approval"] == "awaiting_input", live.task_states(TRAIN, run_id)
    time.sleep(settle)
    path = f"/api/v2/dags/{TRAIN}/dagRuns/{run_id}/taskInstances/gate/xcomEntries/return_value"
    return live.get(path)["value"]


def _answer(live: LiveAirflow, run_id: str, user: str, body: dict) -> tuple[int, str]:
    """PATCH the HITL detail as ``user`` (a JWT of their own); the HTTP status and the response text."""
    token_req = urllib.request.Request(
        f"{live.url}/auth/token",
        data=json.dumps({"username": user, "password": USERS[user]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(token_req, timeout=30) as r:
        token = json.loads(r.read())["access_token"]
    req = urllib.request.Request(
        f"{live.url}/api/v2/dags/{TRAIN}/dagRuns/{run_id}/taskInstances/approval/-1/hitlDetails",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="PATCH",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_person_approves_in_required_actions_and_the_champion_moves(live, inbox):
    if CHROMIUM is None:
        message = "no chromium on the PATH: install Debian's chromium (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    run_id = "approve_in_ui"
    judged = _train_until_it_waits(live, run_id)
    version = judged["version"]
    assert judged["decision"] == "awaiting_approval" and _champion(live) is None
    assert _tags(live, version)["airloop.gate.decision"] == "awaiting_approval"
    request = inbox.wait_for(lambda m: f"version {version} awaits your approval" in m["subject"])
    assert f"/dags/{TRAIN}/runs/{run_id}/tasks/approval/required_actions" in body_text(request)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(f"{live.url}/")
        page.fill("input[name=username]", "carol")
        page.fill("input[name=password]", USERS["carol"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
        page.goto(f"{live.url}/dags/{TRAIN}/runs/{run_id}/tasks/approval/required_actions")
        # the evidence a person decides on: the question, the CI of the primary metric, the rules
        expect(page.get_by_text(f"version {version} to champion?").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("PASS floor").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "approval-required-action.png"), full_page=True)
        page.get_by_role("textbox").last.fill("evidence reviewed")
        page.get_by_role("button", name="Approve").click()
        assert live.wait_for_run(TRAIN, run_id, timeout=300) == "success"
        page.screenshot(path=str(ARTIFACTS / "approval-answered.png"), full_page=True)
        browser.close()

    assert live.task_states(TRAIN, run_id)["record_approval"] == "success"
    assert _champion(live) == version
    tags = _tags(live, version)
    assert tags["airloop.gate.decision"] == "promoted" and tags["airloop.approval.by"] == "carol"
    mail = inbox.wait_for(lambda m: f"version {version} is the new champion" in m["subject"])
    assert "approved by carol (evidence reviewed)" in body_text(mail)


def test_a_request_rejected_through_the_rest_api_keeps_the_champion(live, inbox):
    champion = _champion(live)
    run_id = "reject_by_rest"
    version = _train_until_it_waits(live, run_id)["version"]

    status, text = _answer(live, run_id, "bob", {"chosen_options": ["Approve"], "params_input": {"reason": ""}})
    assert status == 403 and "not a respondent" in text  # bob may trigger runs but is not an approver
    assert live.task_states(TRAIN, run_id)["approval"] == "awaiting_input"

    reason = "the holdout misses the holiday season"
    status, text = _answer(live, run_id, "admin", {"chosen_options": ["Reject"], "params_input": {"reason": reason}})
    assert status == 200, text
    assert live.wait_for_run(TRAIN, run_id, timeout=300) == "success"
    assert live.task_states(TRAIN, run_id)["record_approval"] == "success"
    assert _champion(live) == champion
    tags = _tags(live, version)
    assert tags["airloop.gate.decision"] == "rejected" and tags["airloop.approval.by"] == "admin"
    assert tags["airloop.approval.reason"] == reason
    mail = inbox.wait_for(lambda m: f"version {version} was not promoted" in m["subject"])
    assert f"rejected by admin: {reason}" in body_text(mail)


def test_a_request_nobody_answers_is_rejected_as_timed_out(live, inbox):
    champion = _champion(live)
    run_id = "nobody_answers"
    version = _train_until_it_waits(live, run_id, settle=0)["version"]
    started = time.monotonic()
    assert live.wait_for_run(TRAIN, run_id, timeout=TIMEOUT_HOURS * 3600 + 300) == "success"
    assert time.monotonic() - started > TIMEOUT_HOURS * 3600 - 30, "answered before its timeout"
    assert _champion(live) == champion
    tags = _tags(live, version)
    assert tags["airloop.gate.decision"] == "rejected" and tags["airloop.approval.answer"].startswith("timed out")
    inbox.wait_for(lambda m: f"version {version} was not promoted: timed out" in m["subject"])


def test_a_scheduler_killed_during_a_daily_run_is_restarted_and_the_run_gives_the_same_output(live):
    """SIGKILL the scheduler while the daily run's stages run; start it again: the run finishes, and its
    partitions are byte-identical to a clean re-run of the same day (all its tasks cleared and run again)."""
    import signal

    from airloop import lake

    ds = (START + timedelta(days=DAYS)).isoformat()
    daily = "airloop_daily"
    run_id = live.post(f"/api/v2/dags/{daily}/dagRuns", {"logical_date": f"{ds}T00:00:00Z", "conf": {}})["dag_run_id"]
    live.unpause(daily)
    stages = ("ingest", "validate", "materialize")
    killed_during = live.wait(
        lambda: next((t for t, st in live.task_states(daily, run_id).items() if t in stages and st == "running"), None),
        300,
        "a stage of the daily run to be running",
        every=0.5,
    )
    killed = live.procs["scheduler"].pid
    os.kill(killed, signal.SIGKILL)  # the scheduler only: its LocalExecutor workers live on, as after a crash
    live.procs["scheduler"].wait()
    time.sleep(5)
    live.restart("scheduler")
    try:
        assert live.wait_for_run(daily, run_id, timeout=900) == "success", live.task_states(daily, run_id)
    finally:  # the killed scheduler's orphaned workers (its process group) go too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(killed, signal.SIGKILL)
    s = _settings(live)
    zones = (lake.RAW, lake.VALIDATED, lake.FEATURES, lake.PREDICTIONS)
    first = {z: lake.data_file(s, z, ds).read_bytes() for z in zones if lake.data_file(s, z, ds).exists()}
    assert set(first) >= {lake.RAW, lake.VALIDATED, lake.FEATURES}, f"killed during {killed_during}"

    live.post(
        f"/api/v2/dags/{daily}/clearTaskInstances", {"dag_run_id": run_id, "dry_run": False, "only_failed": False}
    )
    live.wait(lambda: live.run_state(daily, run_id) in ("queued", "running"), 120, "the cleared run to start", 1)
    assert live.wait_for_run(daily, run_id, timeout=900) == "success"
    again = {z: lake.data_file(s, z, ds).read_bytes() for z in first}
    assert again == first, f"partitions differ after a clean re-run: {[z for z in first if again[z] != first[z]]}"
