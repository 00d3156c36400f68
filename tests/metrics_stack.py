"""Real Prometheus and node-exporter on loopback (Debian's `prometheus`, `prometheus-node-exporter`), the
dashboard's PromQL, and statsd-exporter's mapping rules: what tests/test_metrics.py and the metrics test of
tests/test_drift_policy.py share."""

from __future__ import annotations

import json
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

from live_airflow import IN_CI

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
        if IN_CI:
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
    series = exported_series(line)
    return None if series is None else series[0]


def exported_series(line: str) -> tuple[str, dict[str, str]] | None:
    """The metric name and labels (the InfluxDB-style tags, plus the mapping's own labels with ``$n`` filled from
    the glob) statsd-exporter gives a StatsD line; None: dropped."""
    head = line.split(":", 1)[0]
    name, *tags = head.split(",")
    labels = dict(tag.split("=", 1) for tag in tags if "=" in tag)
    for mapping in yaml.safe_load(STATSD_MAPPING.read_text())["mappings"]:
        pattern = re.compile(mapping["match"]) if mapping.get("match_type") == "regex" else _glob(mapping["match"])
        found = pattern.search(name)
        if found:
            if mapping.get("action") == "drop":
                return None
            groups = found.groups()
            for key, value in (mapping.get("labels") or {}).items():
                labels[key] = re.sub(r"\$(\d+)", lambda m, g=groups: g[int(m.group(1)) - 1], str(value))
            return mapping["name"], labels
    return re.sub(r"[^a-zA-Z0-9_]", "_", name), labels


def _labels(labels: dict[str, str], **extra: str) -> str:
    pairs = {**labels, **extra}
    if not pairs:
        return ""
    escape = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
    return "{" + ",".join(f'{k}="{v.translate(escape)}"' for k, v in sorted(pairs.items())) + "}"


def statsd_textfile(lines: list[str], zero: bool = False) -> str:
    """What statsd-exporter would serve after receiving the StatsD ``lines``, in the text exposition format
    (node-exporter's textfile collector serves it): counters summed (sample rates applied), gauges' last value
    (``+n``/``-n`` relative), timers as histograms in seconds with the mapping's default buckets. A name sent
    with two types keeps the first (the exporter drops the conflicting one). ``zero``: the same series with every
    counter and histogram at 0, the exporter's state before the run (so Prometheus' rate() has two samples)."""
    buckets = yaml.safe_load(STATSD_MAPPING.read_text())["defaults"]["histogram_options"]["buckets"]
    kinds: dict[str, str] = {}
    values: dict[tuple[str, tuple], float] = {}
    timings: dict[tuple[str, tuple], list[float]] = {}
    for line in lines:
        series = exported_series(line)
        if series is None or ":" not in line:
            continue
        name, labels = series
        raw, kind, *rate = line.split(":", 1)[1].split("|")
        kind = {"c": "counter", "g": "gauge", "ms": "histogram", "h": "histogram"}.get(kind)
        if kind is None or kinds.setdefault(name, kind) != kind:
            continue
        key = (name, tuple(sorted(labels.items())))
        if kind == "histogram":
            timings.setdefault(key, []).append(float(raw) / 1000)
        elif kind == "counter":
            scale = float(rate[0].removeprefix("@")) if rate and rate[0].startswith("@") else 1.0
            values[key] = values.get(key, 0.0) + float(raw) / scale
        else:
            values[key] = values.get(key, 0.0) + float(raw) if raw[0] in "+-" else float(raw)
    out = []
    for name in sorted(kinds):
        out.append(f"# TYPE {name} {kinds[name]}")
        for (n, labels), v in sorted(values.items()):
            if n == name:
                out.append(f"{name}{_labels(dict(labels))} {0 if zero and kinds[name] == 'counter' else v}")
        for (n, labels), seconds in sorted(timings.items()):
            if n != name:
                continue
            for le in [*buckets, "+Inf"]:
                count = 0 if zero else sum(s <= float(le) for s in seconds)
                out.append(f"{name}_bucket{_labels(dict(labels), le=str(le))} {count}")
            out.append(f"{name}_sum{_labels(dict(labels))} {0 if zero else sum(seconds)}")
            out.append(f"{name}_count{_labels(dict(labels))} {0 if zero else len(seconds)}")
    return "\n".join(out) + "\n"
