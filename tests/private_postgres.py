"""A private PostgreSQL cluster for a live test: ``initdb`` into a temp folder, password (SCRAM) auth on every
connection, listening on 127.0.0.1 at a port of its own and a unix socket inside the folder; removed at stop.
Nothing is shared with the machine's PostgreSQL, so two runs never meet."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MISSING = (
    "PostgreSQL's server programs (initdb, postgres) are not installed: apt-get install postgresql "
    "(the live topology starts a private cluster with them)"
)


def server_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb and postgres (Debian's layout), else PATH's."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "postgres").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb and shutil.which("postgres") else None


@dataclass
class PrivatePostgres:
    """One cluster; ``start()`` returns when it accepts connections as ``user`` with ``password``."""

    port: int
    user: str = "airflow"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    host: str = "127.0.0.1"
    root: Path | None = None
    proc: subprocess.Popen | None = None

    def url(self, dbname: str, scheme: str = "postgresql+psycopg2") -> str:
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def start(self, databases: tuple[str, ...] = ()) -> None:
        """initdb with SCRAM auth and a password file, start the server, create ``databases``."""
        bindir = server_bin()
        if bindir is None:
            raise RuntimeError(MISSING)
        # initdb and postgres refuse to run as root: as root, the cluster belongs to the postgres (or nobody) account
        owner = None
        if os.geteuid() == 0:
            owner = "postgres" if _account_exists("postgres") else "nobody"
        self.root = Path(tempfile.mkdtemp(prefix="airloop-pg-"))  # /tmp: reachable by that account
        data, pwfile = self.root / "data", self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if owner:
            shutil.chown(self.root, owner)
            shutil.chown(pwfile, owner)
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={pwfile}"]
        done = subprocess.run(
            [*initdb, "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions", "--locale=C.UTF-8"],
            capture_output=True,
            text=True,
            user=owner,
        )
        pwfile.unlink()
        if done.returncode:
            raise RuntimeError(f"initdb exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.root)]
            + ["-c", f"listen_addresses={self.host}", "-c", "max_connections=200"]
            # a throwaway cluster: no fsync (the machine's disk is shared with other test runs)
            + ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=owner,
        )
        log.close()
        self._wait(60)
        self._create(databases)

    def connect(self, dbname: str = "postgres", **overrides):
        """A psycopg2 connection over TCP with this cluster's user and password (``overrides`` replace them)."""
        import psycopg2

        kwargs = {"host": self.host, "port": self.port, "user": self.user, "password": self.password}
        # no ~/.pgpass: only what is passed here counts (the file need not exist)
        kwargs["passfile"] = str(self.root / "no-pgpass")
        return psycopg2.connect(dbname=dbname, connect_timeout=5, **{**kwargs, **overrides})

    def query(self, dbname: str, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after 30 s; the folder is removed."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _wait(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                tail = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{tail}")
            try:
                self.connect().close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _create(self, databases: tuple[str, ...]) -> None:
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in databases:
                cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
