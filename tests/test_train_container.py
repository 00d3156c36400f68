"""Containerised training (AIRLOOP_CONTAINER_IMAGE): the train task is the Docker provider's operator configured as
intended, and without a Docker engine it fails at once, in plain words. No Docker engine runs here: nothing in this
file starts a container (the container's command itself is run for real in tests/test_train.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "airloop:0.1.0"
SECRET = "not-a-real-secret-4711"


@pytest.fixture
def container_dag(monkeypatch, tmp_path):
    """airloop_train parsed the way a worker parses it with the containerised mode on."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path / "airloop"))
    monkeypatch.setenv("AIRLOOP_CONTAINER_IMAGE", IMAGE)
    monkeypatch.setenv("AIRLOOP_CONTAINER_NETWORK", "airloop")
    monkeypatch.setenv("AIRLOOP_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3:5000")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/worker-only.pem")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    bag = DagBag(dag_folder=str(ROOT / "dags" / "airloop_train.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["airloop_train"]


def test_train_task_is_a_docker_operator_running_airloop_train(container_dag, tmp_path):
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import Mount

    from airloop_dag_support import MODEL

    train = container_dag.get_task("train")
    assert isinstance(train, DockerOperator)
    assert train.image == IMAGE
    assert train.command[:3] == ["airloop", "train", "--json"]
    home = str(tmp_path / "airloop")
    assert train.mounts == [Mount(target=home, source="airloop-data", type="volume")]
    assert train.network_mode == "airloop"
    assert train.user == "50000:0"  # the Dockerfile's non-root user
    assert train.auto_remove == "force" and train.mount_tmp_dir is False
    assert MODEL in train.outlets
    assert container_dag.get_task("gate").upstream_task_ids == {"train"}
    # the same defaults as every airloop task: owner, retries, failure email
    assert train.owner == "airloop" and train.retries >= 1 and train.on_failure_callback

    env = train._private_environment
    assert env["AIRLOOP_HOME"] == home  # the volume is mounted where the settings point
    assert env["AIRLOOP_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["AWS_SECRET_ACCESS_KEY"] == SECRET and env["AWS_ENDPOINT_URL"] == "http://s3:5000"
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    assert not [k for k in env if k.startswith(("AIRFLOW", "AIRLOOP_CONTAINER_")) or k == "AWS_CA_BUNDLE"]
    assert train.environment == {}  # nothing in the templated (UI-visible) environment


def test_secrets_stay_out_of_the_serialized_dag(container_dag):
    """What the dag-processor stores in the metadata DB (and the UI shows) never holds the forwarded secrets."""
    from airflow.serialization.serialized_objects import DagSerialization

    stored = json.dumps(DagSerialization.to_dict(container_dag))
    assert "--airflow-run-id" in stored  # the train task's templated fields are in there
    assert SECRET not in stored and "AWS_SECRET_ACCESS_KEY" not in stored


@pytest.mark.parametrize(
    ("context", "end_date"),
    [({"ds": "2026-01-05"}, "2026-01-05"), ({}, "")],  # a run without a logical date has no ds
    ids=["with-logical-date", "without"],
)
def test_command_renders_from_the_run_like_the_in_worker_task(container_dag, context, end_date):
    train = container_dag.get_task("train")
    params = {**container_dag.params.dump(), "model_type": "hist_gradient_boosting", "hyperparameters": {"C": 0.5}}
    train.render_template_fields({**context, "params": {**params, "trigger_ds": "2026-01-04"}, "run_id": "r1"})
    assert train.command == [
        "airloop",
        "train",
        "--json",
        "--end-date",
        end_date,
        "--window-days",
        "",
        "--model-type",
        "hist_gradient_boosting",
        "--hyperparameters",
        '{"C": 0.5}',
        "--reason",
        "manual",
        "--trigger",
        "manual",
        "--causes",
        "",
        "--trigger-ds",
        "2026-01-04",
        "--airflow-run-id",
        "r1",
    ]


def test_a_failed_container_fails_the_task_with_its_log_tail():
    """The provider's own exception (what DockerOperator raises on a non-zero exit) becomes the task's error with
    the last lines of the container's log. (Validated on the exception only: no container runs here.)"""
    from airflow.providers.docker.exceptions import DockerContainerFailedException

    from airloop_container import LOG_TAIL, failure_message

    logs = [f"line {i}" for i in range(100)] + ["ValueError: only 1 validated days in the 30-day window"]
    exc = DockerContainerFailedException("Docker container failed: {'StatusCode': 2}", logs=logs)
    message = failure_message(IMAGE, exc)
    assert "'StatusCode': 2" in message and IMAGE in message
    assert message.rstrip().endswith("ValueError: only 1 validated days in the 30-day window")
    assert f"line {100 - LOG_TAIL + 1}" in message and f"line {100 - LOG_TAIL}\n" not in message


def test_without_a_docker_engine_the_task_fails_at_once_in_plain_words(airflow_db, tmp_path):
    """`airflow dags test` runs the real task (DockerOperator -> DockerHook -> docker SDK) against a socket that
    does not exist: the run fails within seconds, and the error says what is missing and what to do."""
    socket = tmp_path / "no-engine" / "docker.sock"
    env = {
        **os.environ,
        "AIRLOOP_HOME": str(tmp_path / "airloop"),
        "AIRLOOP_CONTAINER_IMAGE": IMAGE,
        "AIRLOOP_TASK_RETRIES": "0",
        "DOCKER_HOST": f"unix://{socket}",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "airloop_train", "2026-01-05"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-3000:]
    assert f"Containerised training is on (AIRLOOP_CONTAINER_IMAGE={IMAGE}) but no Docker engine answers" in out
    assert f"there is no Docker socket at {socket}" in out
    assert "FileNotFoundError" in out  # the docker SDK's own reason, kept beside the plain words
    assert "or unset AIRLOOP_CONTAINER_IMAGE to train inside the worker" in out
    assert elapsed < 120, f"took {elapsed:.0f} s: a missing engine must not hang the task"


def test_an_engine_address_where_nothing_listens_is_named_as_such(container_dag):
    """The same path straight through the operator, against a loopback TCP port that is closed."""
    import socket

    from airflow.sdk.exceptions import AirflowException

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    train = container_dag.get_task("train")
    train.docker_url = f"tcp://127.0.0.1:{port}"
    with pytest.raises(AirflowException) as err:
        train.execute({})
    assert f"tcp://127.0.0.1:{port}: nothing listens there" in str(err.value)
    assert "Connection refused" in str(err.value)
