"""The production topology on this machine's real services, for the live tests (not a test module itself).

PostgreSQL holds the Airflow metadata DB and the MLflow backend store; Redis is the Celery broker and
the Feast online store; ``moto_server`` is the S3-compatible endpoint (landing batches, MLflow artifacts).
Started as separate processes: api-server, scheduler, dag-processor, triggerer, two celery workers and
``mlflow server``. :func:`production_env` is the profile itself: configuration only, no code paths of
its own; ``docker-compose.yaml`` must set the same keys (``tests/test_production_compose.py``).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT = "127.0.0.1", 5432, "127.0.0.1", 6379
AIRFLOW_DB, MLFLOW_DB = "airloop_it_airflow", "airloop_it_mlflow"
BROKER_DB, ONLINE_DB = 10, 11
LANDING_BUCKET, MLFLOW_BUCKET, OUTPUT_BUCKET = "airloop-landing", "airloop-mlflow", "airloop-outputs"
PORT_RANGE = range(28000, 29000)  # this project's live tests' ports

# Keys the live test sets only to drive or speed up the test; everything else is the profile.
TEST_ONLY_KEYS = {
    "AIRFLOW_HOME",  # image: /opt/airflow
    "AIRFLOW__CORE__DAGS_FOLDER",  # image: /opt/airloop/dags
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE",  # the test triggers each simulated day itself
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
    "AIRFLOW__API__WORKERS",  # one api-server process is plenty for one test client
}


def production_env(
    *,
    home: Path,
    airflow_home: Path,
    api_url: str,
    mlflow_url: str,
    s3_url: str,
    secrets_: dict[str, str],
    online_redis_port: int = REDIS_PORT,
    online_redis_password: str | None = None,
) -> dict[str, str]:
    """The production profile as environment variables (Airflow's ``AIRFLOW__*`` and airloop's ``AIRLOOP_*``)."""
    pg = f"postgres@{PG_HOST}:{PG_PORT}"
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__FERNET_KEY": secrets_["fernet_key"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}/{AIRFLOW_DB}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{BROKER_DB}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}/{AIRFLOW_DB}",
        # record which worker ran each task (celery_taskmeta.worker)
        "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": '{"result_extended": true}',
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__API__SECRET_KEY": secrets_["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets_["jwt_secret"],
        # a worker that dies is noticed after this many seconds and its task retried elsewhere
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRLOOP_HOME": str(home),
        "AIRLOOP_MLFLOW_TRACKING_URI": mlflow_url,
        "AIRLOOP_ONLINE_STORE": "redis",
        "AIRLOOP_REDIS_CONNECTION": f"{REDIS_HOST}:{online_redis_port},db={ONLINE_DB}"
        + (f",password={online_redis_password}" if online_redis_password else ""),
        "AIRLOOP_SOURCE": "s3",
        "AIRLOOP_S3_BUCKET": LANDING_BUCKET,
        "AIRLOOP_S3_OUTPUT_BUCKET": OUTPUT_BUCKET,
        "AWS_ACCESS_KEY_ID": secrets_["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": secrets_["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_url,
        "MLFLOW_S3_ENDPOINT_URL": s3_url,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # a tracking server that is down fails the call in seconds, and Airflow's retries take over
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",  # no job-runner processes beside the tracking server
    }


def mlflow_server_command(port: int) -> list[str]:
    """``mlflow server`` with its backend store on PostgreSQL and artifacts proxied to S3."""
    return [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{MLFLOW_DB}",
        "--artifacts-destination",
        f"s3://{MLFLOW_BUCKET}/artifacts",
    ]


def require_service(host: str, port: int, what: str) -> str | None:
    """None when reachable, else the reason (the caller fails in CI, skips elsewhere)."""
    try:
        socket.create_connection((host, port), timeout=2).close()
        return None
    except OSError:
        return f"{what} is not reachable on {host}:{port} (see README, 'Running in production')"


def free_port() -> int:
    """A free port in this project's range."""
    for port in secrets.SystemRandom().sample(PORT_RANGE, 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def recreate_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def query(dbname: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while require_service("127.0.0.1", port, "") is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")
        time.sleep(0.2)


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (from /proc)."""
    children, out, todo = _children(), [], [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        out += kids
        todo += kids
    return out


def running_a_task(worker_pid: int) -> bool:
    """A celery worker is running a task when one of its pool processes has a child (the task's supervisor fork)."""
    children = _children()
    return any(children.get(pool) for pool in children.get(worker_pid, []))


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log: Path
    down_on_purpose: bool = False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        self.down_on_purpose = True
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill_hard(self) -> None:
        """SIGKILL the process and everything below it at once: a host or container dying."""
        self.down_on_purpose = True
        victims = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


@dataclass
class Topology:
    workdir: Path
    env: dict[str, str]
    api_url: str
    mlflow_url: str
    s3_url: str
    password: str
    online_redis_port: int
    online_redis_password: str
    processes: dict[str, Process] = field(default_factory=dict)
    _token: str | None = None

    def start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Process:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            argv,
            env={**self.env, **(extra_env or {})},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.workdir,
        )
        self.processes[name] = Process(name, proc, log)
        return self.processes[name]

    def restart(self, name: str, timeout: float = 240) -> None:
        """Start a stopped process again with the same command line; wait until it answers."""
        old = self.processes[name]
        old.stop()
        self.start(name, old.proc.args)
        if name == "mlflow":
            wait_http(f"{self.mlflow_url}/health", timeout, self.processes[name].proc, self.processes[name].log)
        if name == "redis-online":
            wait_port(self.online_redis_port, timeout)

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def stop_all(self) -> None:
        """SIGTERM every process group at once, then SIGKILL what is still there after 30 s."""
        for p in self.processes.values():
            if p.proc.poll() is None:
                try:
                    os.killpg(p.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        for p in self.processes.values():
            try:
                p.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            p.stop(signal.SIGKILL, 10)

    # REST API v2 (the same calls as the UI makes)
    def _headers(self) -> dict[str, str]:
        if self._token is None:
            r = httpx.post(f"{self.api_url}/auth/token", json={"username": "admin", "password": self.password})
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def api(self, method: str, path: str, **kwargs) -> dict:
        r = httpx.request(method, f"{self.api_url}/api/v2{path}", headers=self._headers(), timeout=30, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()

    def wait_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        for dag_id in dag_ids:
            while True:
                r = httpx.get(f"{self.api_url}/api/v2/dags/{dag_id}", headers=self._headers(), timeout=30)
                if r.status_code == 200:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the dag-processor did not parse {dag_id} within {timeout} s")
                time.sleep(1)
            self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, ds: str, conf: dict | None = None, run_id: str | None = None) -> str:
        body = {"logical_date": f"{ds}T00:00:00Z", "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.run_state(dag_id, run_id)) not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} {run_id} still {state} after {timeout} s\n{self.diagnose()}")
            for p in self.processes.values():
                if p.proc.poll() is not None and not p.down_on_purpose:
                    raise RuntimeError(f"{p.name} exited with {p.proc.returncode}\n{p.log.read_text()[-3000:]}")
            time.sleep(2)
        return state

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        tis = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti for ti in tis}

    def diagnose(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log.read_text()[-1500:]}" for p in self.processes.values())


def start_topology(workdir: Path, extra: dict[str, str] | None = None) -> Topology:
    """Fresh databases and Redis DBs, then S3, MLflow and every Airflow component; returns when all answer."""
    import boto3
    import redis

    for db in (AIRFLOW_DB, MLFLOW_DB):
        recreate_database(db)
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB).flushdb()

    api_port, mlflow_port, s3_port, online_port = free_port(), free_port(), free_port(), free_port()
    password = secrets.token_urlsafe(12)
    secrets_ = {
        "fernet_key": __import__("cryptography.fernet", fromlist=["Fernet"]).Fernet.generate_key().decode(),
        "api_secret_key": secrets.token_urlsafe(16),
        "jwt_secret": secrets.token_urlsafe(32),
        "aws_access_key_id": "airloop-it",
        "aws_secret_access_key": secrets.token_urlsafe(16),
    }
    topo = Topology(
        workdir=workdir,
        env={},
        api_url=f"http://127.0.0.1:{api_port}",
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        s3_url=f"http://127.0.0.1:{s3_port}",
        password=password,
        online_redis_port=online_port,
        online_redis_password=secrets.token_urlsafe(16),
    )
    profile = production_env(
        home=workdir / "airloop",
        airflow_home=workdir / "airflow",
        api_url=topo.api_url,
        mlflow_url=topo.mlflow_url,
        s3_url=topo.s3_url,
        secrets_=secrets_,
        online_redis_port=online_port,
        online_redis_password=topo.online_redis_password,
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AIRLOOP_", "AWS_"))}
    tuning = {"AIRFLOW__API__WORKERS": "1", "PYTHONWARNINGS": "ignore", "FEAST_USAGE": "False"}
    # the metrics export (a teardown task per DAG run, ~5 s of imports on a worker) is off here to keep this module's
    # time; real DAG runs export in tests/test_monitor_e2e.py, compose runs it on (the default)
    tuning["AIRLOOP_METRICS_EXPORT"] = "false"
    topo.env = {**base, **profile, **tuning, **(extra or {})}
    topo.profile = profile  # type: ignore[attr-defined]
    try:
        # the Feast online store gets a Redis server of its own, so a fault test can stop it without touching
        # the machine's shared Redis (the broker); append-only, so a restart brings its data back
        (workdir / "redis-online").mkdir()
        topo.start(
            "redis-online",
            ["redis-server", "--bind", "127.0.0.1", "--port", str(online_port), "--save", "", "--appendonly", "yes"]
            + ["--dir", str(workdir / "redis-online"), "--requirepass", topo.online_redis_password],
        )
        wait_port(online_port, 30)
        s3 = topo.start("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)])
        wait_http(topo.s3_url, 60, s3.proc, s3.log)
        client = boto3.client(
            "s3",
            endpoint_url=topo.s3_url,
            aws_access_key_id=secrets_["aws_access_key_id"],
            aws_secret_access_key=secrets_["aws_secret_access_key"],
            region_name="us-east-1",
        )
        for bucket in (LANDING_BUCKET, MLFLOW_BUCKET, OUTPUT_BUCKET):
            client.create_bucket(Bucket=bucket)
        mlflow = topo.start("mlflow", mlflow_server_command(mlflow_port))
        topo.airflow("db", "migrate")
        # the production profile's users and roles (FAB), as compose's airflow-init creates them
        roles = [str(BIN / "python"), str(ROOT / "production" / "roles.py")]
        subprocess.run(roles, env={**topo.env, "AIRFLOW_ADMIN_PASSWORD": password}, check=True, capture_output=True)
        api = topo.start("api-server", [str(BIN / "airflow"), "api-server", "-H", "127.0.0.1", "-p", str(api_port)])
        topo.start("scheduler", [str(BIN / "airflow"), "scheduler"])
        topo.start("dag-processor", [str(BIN / "airflow"), "dag-processor"])
        topo.start(
            "triggerer",
            [str(BIN / "airflow"), "triggerer"],
            {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())},
        )
        for i in (1, 2):
            topo.start(
                f"worker{i}",
                [str(BIN / "airflow"), "celery", "worker", "-H", f"worker{i}@%h", "--skip-serve-logs"],
            )
        wait_http(f"{topo.api_url}/api/v2/monitor/health", 180, api.proc, api.log)
        wait_http(f"{topo.mlflow_url}/health", 180, mlflow.proc, mlflow.log)
    except BaseException:
        topo.stop_all()
        raise
    return topo


def worker_of_tasks(dag_id: str | None = None) -> dict[tuple[str, str, str], str]:
    """(dag_id, run_id, task_id) -> the celery worker that ran its latest try (celery_taskmeta.worker)."""
    rows = query(
        AIRFLOW_DB,
        "SELECT ti.dag_id, ti.run_id, ti.task_id, m.worker FROM task_instance ti "
        "JOIN celery_taskmeta m ON m.task_id = ti.external_executor_id "
        "WHERE (%s IS NULL OR ti.dag_id = %s)",
        (dag_id, dag_id),
    )
    return {(d, r, t): w for d, r, t, w in rows}
