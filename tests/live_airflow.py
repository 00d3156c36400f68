"""A real Airflow for the operator-surface tests: api-server, scheduler (LocalExecutor) and dag-processor
on a temp AIRFLOW_HOME, a real SMTP server (aiosmtpd) on loopback, and a REST API v2 client with a JWT."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PORTS = range(18000, 19000)  # this project's test range


IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")  # any truthy CI
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # Debian's / Ubuntu's, on the PATH
# screenshots of the browser tests
ARTIFACTS = Path(os.environ.get("AIRLOOP_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 in PORTS."""
    for port in random.sample(PORTS, 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


class SmtpInbox:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        inbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
                inbox.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def wait_for(self, predicate, timeout: float = 120) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if predicate(m):
                    return m
            time.sleep(1)
        subjects = [m["subject"] for m in self.messages]
        raise AssertionError(f"no matching email within {timeout} s; received: {subjects}")

    def stop(self) -> None:
        if self.controller._thread is not None:
            self.controller.stop()


def smtp_env(inbox: SmtpInbox, recipients: dict[str, str]) -> dict[str, str]:
    """Environment for an Airflow in this process (``dag.test()``): ``smtp_default`` pointing at ``inbox``,
    and the alert Variables, ``recipients`` by kind (``""``: the default ``airloop_alert_emails``)."""
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": inbox.port,
        "extra": {"disable_ssl": "true", "disable_tls": "true", "from_email": "airloop@test"},
    }
    env = {"AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(conn)}
    for kind, to in recipients.items():
        env["AIRFLOW_VAR_AIRLOOP_ALERT_EMAILS" + (f"_{kind.upper()}" if kind else "")] = to
    return env


def body_text(msg: EmailMessage) -> str:
    """All text parts of an email, decoded."""
    return "\n".join(part.get_content() for part in msg.walk() if part.get_content_maintype() == "text")


class LiveAirflow:
    """api-server + scheduler + dag-processor sharing one temp home; stopped with ``stop()``."""

    def __init__(self, base: Path, extra_env: dict[str, str]) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (base / "passwords.json").write_text(json.dumps({"admin": "admin"}))
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(base / "airflow"),
            "AIRLOOP_HOME": str(base / "airloop"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # SQLite with four writers (api-server, scheduler, dag-processor, CLI): wait for locks, don't fail
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{base / 'airflow' / 'airflow.db'}?timeout=60",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(base / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "airloop-live-test-secret-" + "x" * 48,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            # the checkout's package first (a git worktree's venv may point at another checkout's include/)
            "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "include")]),
            **extra_env,
        }
        self.env.pop("AIRFLOW_CONN_SMTP_DEFAULT", None)
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self._token: str | None = None

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a command (``airflow ...``, ``airloop ...``) in this Airflow's environment."""
        cmd = [sys.executable, "-m", "airflow", *args[1:]] if args[0] == "airflow" else list(args)
        if args[0] == "airloop":
            cmd = [sys.executable, "-m", "airloop_tools.cli", *args[1:]]
        for _ in range(5):
            out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
            # SQLite answers "database is locked" at once (no waiting) when two writers would deadlock;
            # the command's transaction was rolled back, so running it again is safe
            if "database is locked" not in out.stderr:
                break
            time.sleep(3)
        if check and out.returncode:
            output = f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
            raise AssertionError(f"{' '.join(args)} exited {out.returncode}:\n{output}")
        return out

    def migrate(self) -> None:
        (self.base / "airflow").mkdir(parents=True, exist_ok=True)
        self.cli("airflow", "db", "migrate")

    def start(self) -> None:
        for name in ("api-server", "scheduler", "dag-processor"):
            log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", name],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait(lambda: self._get_status(f"{self.url}/api/v2/version") == 200, 180, "the api-server to answer")

    def restart(self, name: str) -> None:
        """Start component ``name`` again (after it was killed), logging to the same file."""
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", name], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n" + (self.base / f"{name}.log").read_text(errors="replace")[-3000:] for name in self.procs
        )

    def wait(self, condition, timeout: float, what: str, every: float = 2) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in list(self.procs.items()):
                if proc.poll() is None:
                    continue
                # as compose's `restart: unless-stopped` (and systemd) do: a scheduler or dag-processor that
                # crashed is started again, at most twice, and said on the console (Airflow 3.3's scheduler
                # can die in its own error handler on SQLite under load: ObjectDeletedError on a DagRun)
                if name != "api-server" and self.restarts.get(name, 0) < 2:
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    tail = (self.base / f"{name}.log").read_text(errors="replace")[-600:]
                    print(f"[live airflow] {name} exited ({proc.returncode}); restarting it:\n{tail}", flush=True)
                    self.restart(name)
                    continue
                raise AssertionError(f"airflow {name} exited ({proc.returncode}):\n{self.logs()}")
            result = condition()
            if result:
                return result
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")

    # REST API v2, as a user's script calls it
    @staticmethod
    def _get_status(url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0

    def token(self) -> str:
        """A JWT from ``POST /auth/token`` with the user's name and password."""
        if self._token is None:
            body = self._request("POST", "/auth/token", {"username": "admin", "password": "admin"}, auth=False)
            self._token = body["access_token"]
        return self._token

    def _request(self, method: str, path: str, data: dict | None = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(
            self.url + path, data=json.dumps(data).encode() if data is not None else None, headers=headers
        )
        req.method = method
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path} -> {exc.code}: {exc.read().decode()[:1000]}") from exc
        return json.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw.decode()

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, data: dict) -> Any:
        return self._request("POST", path, data)

    def patch(self, path: str, data: dict) -> Any:
        return self._request("PATCH", path, data)

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 240) -> None:
        def parsed() -> bool:
            try:
                return all(self.get(f"/api/v2/dags/{d}")["dag_id"] == d for d in dag_ids)
            except AssertionError:
                return False

        self.wait(parsed, timeout, f"the dag-processor to parse {dag_ids}", every=3)

    def unpause(self, dag_id: str) -> None:
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id)}")["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """The run's final state; a failed run prints its task states and its failed tasks' log tails (pytest
        shows them with the failing test, so a failure in CI explains itself)."""
        state = self.wait(
            lambda: (s := self.run_state(dag_id, run_id)) in ("success", "failed") and s,
            timeout,
            f"{dag_id} run {run_id} to finish",
        )
        if state == "failed":
            print(self.explain(dag_id, run_id), flush=True)
        return state

    def explain(self, dag_id: str, run_id: str) -> str:
        """Task states of a run and the last lines of each failed task's log (errors and warnings)."""
        states = self.task_states(dag_id, run_id)
        lines = [f"[live airflow] {dag_id} run {run_id}: {states}"]
        logs = Path(self.env["AIRFLOW_HOME"]) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        for task_id, state in states.items():
            if state in ("failed", "upstream_failed"):
                for log in sorted(logs.glob(f"task_id={task_id}/**/*.log")):
                    lines.append(f"--- {log.relative_to(logs)} ---\n{log.read_text(errors='replace')[-4000:]}")
        return "\n".join(lines)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id)}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}
