"""The production topology on real services started for the live tests (not a test module itself).

A private PostgreSQL cluster (``private_postgres``: SCRAM passwords, its own port) holds the Airflow metadata DB,
the Celery results and the MLflow backend store; two private ``redis-server`` processes with a password are the
Celery broker and the Feast online store; ``moto_server`` is the S3-compatible endpoint (landing batches, MLflow
artifacts); ``mlflow server`` runs MLflow's basic-auth app and airloop's processes use the service account.
Started as separate processes: api-server, scheduler, dag-processor, triggerer, two celery workers and
``mlflow server``; ``production/init.py`` creates the MLflow DB, the buckets, users and roles as compose's
``airflow-init`` does. Nothing is shared with the machine's PostgreSQL or Redis, so two runs never meet.
:func:`production_env` is the profile itself: configuration only, no code paths of its own;
``docker-compose.yaml`` must set the same keys (``tests/test_production_compose.py``).
"""

from __future__ import annotations

import configparser
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

from private_postgres import PrivatePostgres

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_HOST = "127.0.0.1"
AIRFLOW_DB, MLFLOW_DB = "airflow", "mlflow"  # compose's names (init.py creates mlflow)
MLFLOW_AUTH_INI = ROOT / "deploy" / "mlflow" / "basic_auth.ini"
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
    postgres: str,
    broker_redis: str,
    online_redis: str,
) -> dict[str, str]:
    """The production profile as environment variables (Airflow's ``AIRFLOW__*``, airloop's ``AIRLOOP_*``, the
    MLflow client's). ``postgres``, ``broker_redis`` and ``online_redis`` are ``host:port``; the passwords are in
    ``secrets_``."""
    pg, redis_password = f"airflow:{secrets_['postgres_password']}@{postgres}", secrets_["redis_password"]
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
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{redis_password}@{broker_redis}/{BROKER_DB}",
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
        "AIRLOOP_REDIS_CONNECTION": f"{online_redis},password={redis_password},db={ONLINE_DB}",
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
        # the server requires a user (basic-auth app): the pipeline's service account, the config's admin
        "MLFLOW_TRACKING_USERNAME": mlflow_service_account(),
        "MLFLOW_TRACKING_PASSWORD": secrets_["mlflow_password"],
    }


def mlflow_service_account() -> str:
    """The pipeline's MLflow user: the basic-auth app's admin, named in ``deploy/mlflow/basic_auth.ini``."""
    config = configparser.ConfigParser()
    config.read(MLFLOW_AUTH_INI)
    return config["mlflow"]["admin_username"]


def mlflow_auth_env(folder: Path, admin_password: str, secret_key: str) -> dict[str, str]:
    """The basic-auth app's environment, as compose gives it: the project's ``basic_auth.ini`` with its user
    database moved into ``folder``, the admin's (service account's) password and the CSRF secret."""
    config = configparser.ConfigParser()
    config.read(MLFLOW_AUTH_INI)
    config["mlflow"]["database_uri"] = f"sqlite:///{folder / 'basic_auth.db'}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "basic_auth.ini", "w") as f:
        config.write(f)
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key,
    }


def mlflow_server_command(port: int, backend_store_uri: str) -> list[str]:
    """``mlflow server`` (its basic-auth app) with its backend store on PostgreSQL and artifacts proxied to S3."""
    return [
        str(BIN / "mlflow"),
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_store_uri,
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
    extra_env: dict[str, str] = field(default_factory=dict)
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
    pg: PrivatePostgres
    redis_password: str
    broker_redis_port: int
    online_redis_port: int
    mlflow_password: str
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
        self.processes[name] = Process(name, proc, log, extra_env or {})
        return self.processes[name]

    def restart(self, name: str, timeout: float = 240) -> None:
        """Start a stopped process again with the same command line; wait until it answers."""
        old = self.processes[name]
        old.stop()
        self.start(name, old.proc.args, old.extra_env)
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
        """SIGTERM every process group at once, then SIGKILL what is still there after 30 s; then PostgreSQL."""
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
        self.pg.stop()

    def query(self, dbname: str, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of ``sql`` in the private cluster's ``dbname``."""
        return self.pg.query(dbname, sql, params)

    def worker_of_tasks(self, dag_id: str | None = None) -> dict[tuple[str, str, str], str]:
        """(dag_id, run_id, task_id) -> the celery worker that ran its latest try (celery_taskmeta.worker)."""
        rows = self.query(
            AIRFLOW_DB,
            "SELECT ti.dag_id, ti.run_id, ti.task_id, m.worker FROM task_instance ti "
            "JOIN celery_taskmeta m ON m.task_id = ti.external_executor_id "
            "WHERE (%s IS NULL OR ti.dag_id = %s)",
            (dag_id, dag_id),
        )
        return {(d, r, t): w for d, r, t, w in rows}

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
    """A private PostgreSQL cluster and Redis servers, then S3, init, MLflow and every Airflow component; returns
    when all answer."""
    api_port, mlflow_port, s3_port = free_port(), free_port(), free_port()
    broker_port, online_port = free_port(), free_port()
    secrets_ = {
        "fernet_key": __import__("cryptography.fernet", fromlist=["Fernet"]).Fernet.generate_key().decode(),
        "api_secret_key": secrets.token_urlsafe(16),
        "jwt_secret": secrets.token_urlsafe(32),
        "aws_access_key_id": "airloop-it",
        "aws_secret_access_key": secrets.token_urlsafe(16),
        "postgres_password": secrets.token_urlsafe(16),
        "redis_password": secrets.token_urlsafe(16),
        "mlflow_password": secrets.token_urlsafe(16),
    }
    pg = PrivatePostgres(free_port(), user="airflow", password=secrets_["postgres_password"])
    topo = Topology(
        workdir=workdir,
        env={},
        api_url=f"http://127.0.0.1:{api_port}",
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        s3_url=f"http://127.0.0.1:{s3_port}",
        password=secrets.token_urlsafe(12),
        pg=pg,
        redis_password=secrets_["redis_password"],
        broker_redis_port=broker_port,
        online_redis_port=online_port,
        mlflow_password=secrets_["mlflow_password"],
    )
    profile = production_env(
        home=workdir / "airloop",
        airflow_home=workdir / "airflow",
        api_url=topo.api_url,
        mlflow_url=topo.mlflow_url,
        s3_url=topo.s3_url,
        secrets_=secrets_,
        postgres=f"{pg.host}:{pg.port}",
        broker_redis=f"{REDIS_HOST}:{broker_port}",
        online_redis=f"{REDIS_HOST}:{online_port}",
    )
    outer = ("AIRFLOW", "AIRLOOP_", "AWS_", "MLFLOW_TRACKING_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(outer)}
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"  # init.py calls `airflow`
    tuning = {"AIRFLOW__API__WORKERS": "1", "PYTHONWARNINGS": "ignore", "FEAST_USAGE": "False"}
    # the metrics export (a teardown task per DAG run, ~5 s of imports on a worker) is off here to keep this module's
    # time; real DAG runs export in tests/test_monitor_e2e.py, compose runs it on (the default)
    tuning["AIRLOOP_METRICS_EXPORT"] = "false"
    topo.env = {**base, **profile, **tuning, **(extra or {})}
    topo.profile = profile  # type: ignore[attr-defined]
    try:
        pg.start(databases=(AIRFLOW_DB,))  # the database compose's postgres image creates (POSTGRES_DB)
        # the broker and the Feast online store each get a Redis server of their own (compose shares one), so a
        # fault test can stop the online store without stopping Celery; append-only, so a restart keeps the data
        for name, port in (("redis-broker", broker_port), ("redis-online", online_port)):
            (workdir / name).mkdir()
            topo.start(
                name,
                ["redis-server", "--bind", REDIS_HOST, "--port", str(port), "--save", "", "--appendonly", "yes"]
                + ["--dir", str(workdir / name), "--requirepass", topo.redis_password],
            )
            wait_port(port, 30)
        s3 = topo.start("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)])
        wait_http(topo.s3_url, 60, s3.proc, s3.log)
        # compose's airflow-init: the MLflow DB, `airflow db migrate`, the buckets, users and roles (FAB)
        init = {"POSTGRES_HOST": pg.host, "POSTGRES_PORT": str(pg.port), "POSTGRES_PASSWORD": pg.password}
        done = subprocess.run(
            [str(BIN / "python"), str(ROOT / "production" / "init.py")],
            env={**topo.env, **init, "AIRFLOW_ADMIN_PASSWORD": topo.password},
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"production/init.py exited {done.returncode}:\n{done.stderr[-3000:]}")
        auth = mlflow_auth_env(workdir / "mlflow-auth", topo.mlflow_password, secrets.token_urlsafe(16))
        mlflow = topo.start("mlflow", mlflow_server_command(mlflow_port, pg.url(MLFLOW_DB)), auth)
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
