"""Metrics plumbing that needs no run of the loop: the exposition and textfiles of airloop.metrics (linted by
promtool), the Prometheus config (promtool), the dashboard's shape, and Airflow's StatsD route as far as it runs
here: a real Airflow scheduler and task run send their StatsD packets to a socket of this test, and
deploy/prometheus/statsd_mapping.yml turns them into the names the dashboard queries; those series, rendered as
the exporter would serve them (metrics_stack.statsd_textfile), go through a real node-exporter to a real
Prometheus, where the dashboard's airflow_* queries return data. statsd-exporter itself is not packaged by
Debian, so the exporter never runs here (docker-compose.yaml runs prom/statsd-exporter). The scrape of a real
run of the loop is in tests/test_drift_policy.py."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from metrics_stack import (
    DASHBOARD,
    PROMETHEUS_CONFIG,
    ROOT,
    binary,
    dashboard_queries,
    exported_name,
    metric_names,
    node_exporter,
    prometheus,
    query,
    statsd_textfile,
    wait_for,
)

QUESTIONS = ["Is today's data in?", "Is it valid?", "Is the model healthy?", "Did anything retrain or roll back?"]


def test_promtool_accepts_the_prometheus_config():
    done = subprocess.run(
        [binary("promtool"), "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_exposition_passes_promtools_linter_and_the_cli_writes_the_textfiles(settings):
    """On a home with no run yet: valid exposition (promtool's linter: names, units, counters) holding only what
    is true without a run; `airloop metrics --write` leaves exactly its .prom file (the temp file renamed)."""
    from airloop.metrics import exposition

    printed = exposition(settings)
    lint = subprocess.run([binary("promtool"), "check", "metrics"], input=printed, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    samples = [line for line in printed.splitlines() if line and not line.startswith("#")]
    assert {line.split(" ")[0] for line in samples} == {
        "airloop_lake_metrics_exported_timestamp_seconds",
        "airloop_registry_metrics_exported_timestamp_seconds",
        "airloop_rollbacks_total",  # a count read from the registry: 0 is true here
        'airloop_performance_floor{metric="roc_auc"}',
    }
    env = {**os.environ, "AIRLOOP_HOME": str(settings.home), "PYTHONPATH": str(ROOT / "include")}
    cli = [sys.executable, "-m", "airloop_tools.cli", "metrics", "--write", "--part", "lake", "--json"]
    wrote = json.loads(subprocess.run(cli, capture_output=True, text=True, env=env, check=True).stdout)
    assert [Path(p).name for p in wrote] == ["airloop_lake.prom"] == [p.name for p in settings.metrics_dir.iterdir()]
    assert "airloop_lake_metrics_exported_timestamp_seconds " in Path(wrote[0]).read_text()


def test_the_dashboard_answers_the_on_call_questions():
    dashboard = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[: len(QUESTIONS)] == QUESTIONS and rows[-1].startswith("Airflow")
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and panel["description"], panel["title"]
    names = {n for _, expr in dashboard_queries() for n in metric_names(expr)}
    assert any(n.startswith("airloop_") for n in names) and any(n.startswith("airflow_") for n in names)


def _airflow_exprs() -> set[str]:
    """The dashboard's PromQL that reads Airflow's metrics (airflow_*)."""
    return {expr for _, expr in dashboard_queries() if any(n.startswith("airflow_") for n in metric_names(expr))}


def _compose_statsd_env(port: int) -> dict[str, str]:
    """The AIRFLOW__METRICS__* settings of docker-compose.yaml, with the exporter's address moved to loopback."""
    env = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["x-airloop-env"]
    metrics = {k: str(v) for k, v in env.items() if k.startswith("AIRFLOW__METRICS__")}
    assert metrics["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
    return {**metrics, "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1", "AIRFLOW__METRICS__STATSD_PORT": str(port)}


PROBE_DAG = """
from airflow.sdk import dag, task


@dag(schedule=None)
def airloop_statsd_probe():
    @task
    def ok():
        return 1

    @task(retries=0)
    def fail():
        raise ValueError("on purpose")

    ok() >> fail()


airloop_statsd_probe()
"""


def test_airflow_sends_statsd_that_the_mapping_turns_into_the_dashboards_names(tmp_path):
    """With compose's metrics settings, a real scheduler (three loops) and a real task run (`airflow dags test`
    of a DAG with a passing and a failing task) send StatsD lines with their tags in the InfluxDB style; under
    statsd_mapping.yml each becomes a name without any DAG or task id in it, and every airflow_* name the
    dashboard queries is among them. Those series, as statsd-exporter would serve them before and after the run,
    are served by a real node-exporter (textfile collector) to a real Prometheus on loopback (compose's `airflow`
    job), and every airflow_* query of the dashboard returns data from them."""
    received: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                received.extend(sock.recv(65535).decode().splitlines())
            except TimeoutError:
                continue

    home, dags = tmp_path / "airflow", tmp_path / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE_DAG)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        **_compose_statsd_env(sock.getsockname()[1]),
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([airflow, "scheduler", "-n", "3"], env=env, check=True, capture_output=True, timeout=180)
        test = subprocess.run(
            [airflow, "dags", "test", "airloop_statsd_probe"], env=env, capture_output=True, text=True
        )
        assert test.returncode == 1, test.stdout[-2000:] + test.stderr[-2000:]  # the failing task fails the run
        subprocess.run(["sleep", "0.5"], check=True)
    finally:
        stop.set()
        listener.join()
        sock.close()
    assert received, "Airflow sent no StatsD line: without the statsd package (a dependency) it sends none, silently"
    tagged = [line for line in received if ",dag_id=airloop_statsd_probe," in line]
    assert any(
        line.startswith("airflow.ti.finish,dag_id=airloop_statsd_probe,task_id=fail,state=failed") for line in tagged
    )
    assert any(line.startswith("airflow.task.duration,") and line.endswith("|ms") for line in tagged), tagged
    exported = {exported_name(line) for line in received} - {None}
    assert not [n for n in exported if "statsd_probe" in n], "a DAG id in a metric name: map or drop its legacy form"
    assert {
        "airflow_scheduler_heartbeat",
        "airflow_ti_failures",
        "airflow_ti_successes",
        "airflow_ti_finish",
    } <= exported
    assert "airflow_task_duration" in exported  # a timer: a histogram (_bucket, _sum, _count) in the exporter
    queried = {n for _, expr in dashboard_queries() for n in metric_names(expr) if n.startswith("airflow_")}
    assert queried and {n.removesuffix("_bucket") for n in queried} <= exported, queried - exported

    airflow_queries = [(title, expr) for title, expr in dashboard_queries() if expr in _airflow_exprs()]
    assert len(airflow_queries) >= 4, airflow_queries
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()

    def serve(text: str) -> None:  # atomically, as statsd-exporter's state changes between two scrapes
        (textfiles / "statsd.prom.tmp").write_text(text)
        (textfiles / "statsd.prom.tmp").replace(textfiles / "statsd.prom")

    serve(statsd_textfile(received, zero=True))
    with node_exporter(textfiles, tmp_path) as target, prometheus({"airflow": target}, tmp_path) as url:
        wait_for(url, 'airflow_ti_failures{dag_id="airloop_statsd_probe"}')
        serve(statsd_textfile(received))
        wait_for(url, 'airflow_ti_failures{dag_id="airloop_statsd_probe"} > 0')
        assert not query(url, "node_textfile_scrape_error > 0"), "node-exporter could not parse the textfile"
        time.sleep(2.5)  # a few more scrapes for the range functions (rate, increase)
        empty = []
        for title, expr in airflow_queries:
            result = query(url, expr)
            if not result or any(math.isnan(float(s["value"][1])) for s in result):
                empty.append((title, expr, result))
        assert not empty, f"dashboard queries without data: {empty}"
        failed = query(url, 'sum by (dag_id) (increase(airflow_ti_failures{dag_id="airloop_statsd_probe"}[1h]))')
        assert float(failed[0]["value"][1]) > 0
