"""Real Prometheus and node-exporter on loopback (Debian's `prometheus`, `prometheus-node-exporter`), the
dashboard's PromQL, and statsd-exporter's mapping rules: what tests/test_metrics.py and the metrics test of
tests/test_drift_policy.py share."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
STATSD_MAPPING = ROOT / "deploy/prometheus/statsd_mapping.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/airloop.json"
BINARIES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-node-exporter": "prometheus-node-exporter",
}


def binary(name: str) -> str:
    """The path of a Debian binary; missing: fail under CI (.ci/run installs it), skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: apt-get install -y {BINARIES[name]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s: {log.read_text()[-2000:]}")


@contextmanager
def _process(args: list[str], ready_url: str, log: Path) -> Iterator[None]:
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(ready_url, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def node_exporter(textfile_dir: Path, workdir: Path) -> Iterator[str]:
    """node-exporter with only the textfile collector, as in docker-compose.yaml; yields its host:port."""
    port = free_port()
    args = [binary("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{port}"]
    args += ["--collector.disable-defaults", "--collector.textfile", f"--collector.textfile.directory={textfile_dir}"]
    with _process(args, f"http://127.0.0.1:{port}/metrics", workdir / "node-exporter.log"):
        yield f"127.0.0.1:{port}"


def loopback_config(targets: dict[str, str], interval: str = "1s") -> dict:
    """deploy/prometheus/prometheus.yml with each job's target moved to loopback (the jobs without one dropped)."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = interval
    jobs = [j for j in config["scrape_configs"] if j["job_name"] in targets]
    for job in jobs:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    config["scrape_configs"] = jobs
    return config


@contextmanager
def prometheus(targets: dict[str, str], workdir: Path) -> Iterator[str]:
    """Debian's Prometheus on loopback scraping ``targets`` (job name -> host:port) every second; yields its URL."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(loopback_config(targets)))
    args = [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}"]
    args += [f"--web.listen-address=127.0.0.1:{port}"]
    with _process(args, f"http://127.0.0.1:{port}/-/ready", workdir / "prometheus.log"):
        yield f"http://127.0.0.1:{port}"


def query(url: str, expr: str) -> list[dict]:
    """An instant query through the HTTP API; raises on a PromQL error."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def value(url: str, expr: str) -> float:
    (sample,) = query(url, expr)
    return float(sample["value"][1])


def wait_for(url: str, expr: str, samples: int = 1, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = query(url, expr)
        if len(result) >= samples:
            return result
        time.sleep(0.5)
    raise TimeoutError(f"{expr} has fewer than {samples} series after {timeout} s")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


METRIC_NAME = re.compile(r"\b(airloop_\w+|airflow_\w+)\b")


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


# ----------------------------------------------------------------- statsd-exporter's mapping, as it documents it


def _glob(pattern: str) -> re.Pattern:
    """statsd-exporter's glob: ``*`` stands for one dot-separated component."""
    return re.compile(
        "^" + r"\.".join("([^.]+)" if part == "*" else re.escape(part) for part in pattern.split(".")) + "$"
    )


def exported_name(line: str) -> str | None:
    """The Prometheus metric name statsd-exporter gives a StatsD line under deploy/prometheus/statsd_mapping.yml
    (None: dropped): InfluxDB-style tags are split off as labels; the first matching mapping names it; unmapped,
    every character outside [a-zA-Z0-9_] becomes ``_``."""
    name = line.split(":", 1)[0].split(",", 1)[0]
    for mapping in yaml.safe_load(STATSD_MAPPING.read_text())["mappings"]:
        pattern = re.compile(mapping["match"]) if mapping.get("match_type") == "regex" else _glob(mapping["match"])
        if pattern.search(name):
            return None if mapping.get("action") == "drop" else mapping["name"]
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)
