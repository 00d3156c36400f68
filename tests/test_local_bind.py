"""`make airflow`, run for real as a user runs it on a laptop: the api-server it starts listens on 127.0.0.1
only, read from the kernel's socket table (not from a configuration file)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from live_airflow import free_port
from production_topology import wait_http

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_make_airflow_listens_on_loopback_only(tmp_path):
    port = free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AIRLOOP_"))}
    # a fresh home and a free port; everything else is the Makefile's own defaults
    env.update(AIRLOOP_HOME=str(home), AIRFLOW__API__PORT=str(port), AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}")
    log = open(tmp_path / "make-airflow.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "airflow"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v2/version", 300, proc, tmp_path / "make-airflow.log")
        listening = {
            c.laddr.ip
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}, f"port {port} listens on {listening}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
