"""The production MLflow server's authentication, live: `mlflow server --app-name basic-auth` on loopback with
the project's `deploy/mlflow/basic_auth.ini` (its database moved to a temp folder). Anonymous requests and a
read-only user cannot move the `champion` alias; the pipeline's service account (MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD, as compose gives it) registers a version and moves it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from live_airflow import free_port
from production_topology import mlflow_auth_env, mlflow_service_account, wait_http

ROOT = Path(__file__).resolve().parents[1]
SERVICE, PASSWORD = "airloop", "service-account-secret"
MODEL = "airloop_auth_check"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-auth")
    assert mlflow_service_account() == SERVICE  # the admin of deploy/mlflow/basic_auth.ini
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(mlflow_auth_env(base, PASSWORD, "test-secret-key"))  # as the live topology starts its server
    log = open(base / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
         "--artifacts-destination", str(base / "artifacts")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", 120, proc, base / "server.log")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _client(url: str, monkeypatch, user: str | None, password: str | None):
    from mlflow import MlflowClient

    for key, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=url, registry_uri=url)


def test_only_the_service_account_moves_the_champion_alias(server, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    service = _client(server, monkeypatch, SERVICE, PASSWORD)
    service.create_registered_model(MODEL)
    run = service.create_run(service.create_experiment("auth-check"))
    version = service.create_model_version(
        MODEL, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    ).version
    AuthServiceClient(server).create_user("reader", "reader-password")  # a person: READ by default

    anonymous = _client(server, monkeypatch, None, None)
    with pytest.raises(MlflowException) as refused:
        anonymous.set_registered_model_alias(MODEL, "champion", version)
    assert "401" in str(refused.value) or "Unauthorized" in str(refused.value)

    reader = _client(server, monkeypatch, "reader", "reader-password")
    assert reader.get_registered_model(MODEL).name == MODEL  # may read
    with pytest.raises(MlflowException) as forbidden:
        reader.set_registered_model_alias(MODEL, "champion", version)
    assert "403" in str(forbidden.value) or "Permission denied" in str(forbidden.value)

    wrong = _client(server, monkeypatch, SERVICE, "not-the-password")
    with pytest.raises(MlflowException):
        wrong.set_registered_model_alias(MODEL, "champion", version)

    service = _client(server, monkeypatch, SERVICE, PASSWORD)
    service.set_registered_model_alias(MODEL, "champion", version)
    assert service.get_model_version_by_alias(MODEL, "champion").version == version


def test_compose_runs_the_basic_auth_app_and_gives_the_pipeline_the_service_account():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    mlflow = compose["services"]["mlflow"]
    assert mlflow["command"][:4] == ["mlflow", "server", "--app-name", "basic-auth"]
    assert mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    assert "MLFLOW_SECRET_KEY" in mlflow["environment"]["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert {"source": "mlflow_auth", "target": "/etc/mlflow/basic_auth.ini"} in mlflow["configs"]
    for name in ("scheduler", "worker", "serve"):
        env = compose["services"][name]["environment"]
        assert env["MLFLOW_TRACKING_USERNAME"] == SERVICE and "MLFLOW_PASSWORD" in env["MLFLOW_TRACKING_PASSWORD"]
