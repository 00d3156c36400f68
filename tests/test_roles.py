"""Production authentication, live: an api-server with the FAB auth manager, its users and roles created by
``production/roles.py`` from the environment as ``.env`` gives them, and the REST API called with a JWT of
each user. Viewer reads (runs, a task's log) but may not trigger; AirloopOp triggers the daily chain but not a
rollback or training; AirloopMLLead may; anonymous gets 401. Only airloop_daily is unpaused, once, so that one task
writes a log for the viewer to read; the other runs never execute."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from live_airflow import LiveAirflow

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PASSWORDS = {
    "AIRFLOW_ADMIN_PASSWORD": "admin-pw",
    "AIRFLOW_VIEWER_PASSWORD": "viewer-pw",
    "AIRFLOW_OP_PASSWORD": "op-pw",
    "AIRFLOW_MLLEAD_PASSWORD": "mllead-pw",
}
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    airflow = LiveAirflow(tmp_path_factory.mktemp("roles"), {"AIRFLOW__CORE__AUTH_MANAGER": FAB, **PASSWORDS})
    airflow.migrate()
    roles = subprocess.run(
        [sys.executable, str(ROOT / "production" / "roles.py")], env=airflow.env, capture_output=True, text=True
    )
    assert roles.returncode == 0, roles.stderr[-3000:]
    again = subprocess.run(  # idempotent: init runs on every `docker compose up`
        [sys.executable, str(ROOT / "production" / "roles.py")], env=airflow.env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    airflow.start()
    try:
        yield airflow
    finally:
        airflow.stop()


def _call(live: LiveAirflow, method: str, path: str, user: str | None, body: dict | None = None) -> int:
    return _request(live, method, path, user, body)[0]


def _request(live: LiveAirflow, method: str, path: str, user: str | None, body: dict | None = None) -> tuple[int, Any]:
    """(status, JSON body or None) of one REST call with ``user``'s JWT (none: anonymous)."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        req = urllib.request.Request(
            f"{live.url}/auth/token",
            data=json.dumps({"username": user, "password": PASSWORDS[f"AIRFLOW_{user.upper()}_PASSWORD"]}).encode(),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            headers["Authorization"] = f"Bearer {json.loads(r.read())['access_token']}"
    req = urllib.request.Request(
        live.url + path, data=json.dumps(body).encode() if body is not None else None, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _trigger(live: LiveAirflow, user: str | None, dag_id: str, conf: dict | None = None, run_id: str = "") -> int:
    default = {"airloop_rollback": {"reason": "roles test"}, "airloop_release": {"date": "2026-01-04"}}.get(dag_id, {})
    body = {"logical_date": None, "conf": default if conf is None else conf}
    if run_id:
        body["dag_run_id"] = run_id
    return _call(live, "POST", f"/api/v2/dags/{dag_id}/dagRuns", user, body)


# a training run an ML lead asks for by hand: its own window, estimator and hyperparameters, and why (the DAG has no
# force switch: a forced promotion is `airloop promote --force --reason`, recorded as such)
LEAD_TRAINING = {
    "reason": "mllead: retrain on the last 14 days after the pricing change",
    "window_days": 14,
    "model_type": "hist_gradient_boosting",
    "hyperparameters": {"max_iter": 50},
}


def test_each_role_may_do_what_its_people_do_and_nobody_is_anonymous(live):
    def parsed() -> bool:
        return _call(live, "GET", "/api/v2/dags/airloop_rollback", "admin") == 200

    live.wait(parsed, 240, "the DAGs to be parsed", every=3)
    assert _call(live, "GET", "/api/v2/dags", None) == 401
    assert _trigger(live, None, "airloop_daily") == 401

    assert _call(live, "GET", "/api/v2/dags/airloop_daily/dagRuns", "viewer") == 200
    assert _trigger(live, "viewer", "airloop_daily") == 403

    assert _trigger(live, "op", "airloop_daily", run_id="roles_op_daily") == 200
    assert _trigger(live, "op", "airloop_monitor") == 200
    assert _trigger(live, "op", "airloop_release") == 200
    assert _trigger(live, "op", "airloop_rollback") == 403
    assert _trigger(live, "op", "airloop_train") == 403
    assert _trigger(live, "op", "airloop_train", LEAD_TRAINING) == 403

    assert _trigger(live, "mllead", "airloop_rollback") == 200
    assert _trigger(live, "mllead", "airloop_train") == 200
    assert _trigger(live, "mllead", "airloop_train", LEAD_TRAINING) == 200


def test_a_viewer_reads_a_task_log(live):
    """The op's daily run executes (no landing batch: ``ingest`` fails and writes its log); the viewer reads that
    log, anonymous gets 401."""
    run = "/api/v2/dags/airloop_daily/dagRuns/roles_op_daily"
    assert _call(live, "PATCH", "/api/v2/dags/airloop_daily", "admin", {"is_paused": False}) == 200

    def first_try_ended() -> bool:
        status, ti = _request(live, "GET", f"{run}/taskInstances/ingest", "admin")
        return status == 200 and ti["try_number"] >= 1 and ti["state"] in ("up_for_retry", "failed", "success")

    live.wait(first_try_ended, 300, "ingest's first try to end", every=3)
    _call(live, "PATCH", "/api/v2/dags/airloop_daily", "admin", {"is_paused": True})
    status, log = _request(live, "GET", f"{run}/taskInstances/ingest/logs/1", "viewer")
    assert status == 200, status
    assert "no landing batch" in json.dumps(log), str(log)[:2000]  # the task's own error, from its log file
    assert _call(live, "GET", f"{run}/taskInstances/ingest/logs/1", None) == 401


def test_only_the_ml_lead_may_answer_a_promotion_request(live):
    """Answering a request in *Required Actions* is a PATCH of the task's HITL detail, authorized before the
    request is looked up: the ML lead passes the check (404: no such request here), Op and Viewer get 403,
    anonymous 401."""
    path = "/api/v2/dags/airloop_train/dagRuns/no_such_run/taskInstances/approval/-1/hitlDetails"
    answer = {"chosen_options": ["Approve"], "params_input": {}}
    assert _call(live, "PATCH", path, "mllead", answer) == 404
    assert _call(live, "PATCH", path, "admin", answer) == 404
    assert _call(live, "PATCH", path, "op", answer) == 403
    assert _call(live, "PATCH", path, "viewer", answer) == 403
    assert _call(live, "PATCH", path, None, answer) == 401
    assert _call(live, "GET", "/api/v2/dags/~/dagRuns/~/hitlDetails", "op") == 200  # Op still reads requests
