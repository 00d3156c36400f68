"""Optional containerised training: with ``AIRLOOP_CONTAINER_IMAGE`` set, airloop_train's ``train`` task runs
``airloop train`` (the same code as the in-worker task) in that image through the Docker provider's
DockerOperator, so training's heavy dependencies can live in the image instead of on the workers.

Settings, read where the DAG is parsed (dag-processor and workers alike):
``AIRLOOP_CONTAINER_IMAGE`` the image, built from this repository's Dockerfile (unset: train in the worker);
``AIRLOOP_CONTAINER_DATA_VOLUME`` the named volume (or absolute host path) holding ``AIRLOOP_HOME``, mounted at
the same path (default ``airloop-data``); ``AIRLOOP_CONTAINER_NETWORK`` a Docker network from which MLflow,
Redis and S3 are reachable (default: the engine's bridge); ``AIRLOOP_CONTAINER_USER`` (default ``50000:0``, the
Dockerfile's user); ``DOCKER_HOST`` the engine (default ``unix://var/run/docker.sock``).

Not loaded by Airflow's plugin manager (``plugins/.airflowignore``): the DAG imports it only in this mode.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk.exceptions import AirflowException
from docker.types import Healthcheck, Mount

# the worker's environment the container gets: S3 (boto3) and MLflow client settings (airloop's own come from
# Settings), less the container mode's own keys and boto3's file paths (files of the worker, not of the image)
FORWARDED_PREFIXES = ("AWS_", "MLFLOW_")
NOT_FORWARDED = ("AIRLOOP_CONTAINER_", "AWS_CA_BUNDLE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
LOG_TAIL = 30

# `airloop train`, templated from the run exactly as the in-worker task reads it (ds is absent for runs
# triggered without a logical date; empty values mean "the default")
TRAIN_COMMAND = [
    "airloop",
    "train",
    "--json",
    "--end-date",
    "{{ params.end_date or (ds if ds is defined else '') }}",
    "--window-days",
    "{{ params.window_days or '' }}",
    "--model-type",
    "{{ params.model_type or '' }}",
    "--hyperparameters",
    "{{ (params.hyperparameters or {}) | tojson }}",
    "--reason",
    "{{ params.reason }}",
    "--trigger",
    "{{ params.trigger }}",
    "--causes",
    "{{ params.causes | join(',') }}",
    "--trigger-ds",
    "{{ params.trigger_ds or '' }}",
    "--airflow-run-id",
    "{{ run_id }}",
]


def container_env(environ: Mapping[str, str], airloop: Mapping[str, str]) -> dict[str, str]:
    """What the container is given (secrets included, hence private): the worker's S3 (boto3) and MLflow client
    variables, and airloop's settings as the worker resolved them (``Settings.as_env``)."""
    both = {**{k: v for k, v in environ.items() if k.startswith(FORWARDED_PREFIXES)}, **airloop}
    return {k: v for k, v in both.items() if not k.startswith(NOT_FORWARDED)}


def _plain_reason(url: str, reason: str) -> str:
    """The docker SDK's connection error in plain words."""
    where = url.removeprefix("unix://").removeprefix("/")
    if "FileNotFoundError" in reason or "No such file" in reason:
        return f"there is no Docker socket at /{where}"
    if "PermissionError" in reason or "Permission denied" in reason:
        return f"uid {os.getuid()} may not use the socket /{where} (give the worker the socket's group)"
    if "Connection refused" in reason:
        return "nothing listens there"
    return "it does not answer"


class AirloopDockerOperator(DockerOperator):
    """DockerOperator that explains a missing engine, puts the container's log tail into a failure and returns
    the JSON result that ``airloop ... --json`` prints as its last line."""

    def _engine_unreachable(self) -> AirflowException:
        import docker

        urls = [self.docker_url] if isinstance(self.docker_url, str) else list(self.docker_url)
        problems = []
        for url in urls:  # ask again only to learn why: the provider's hook logs the reason but raises without it
            try:
                docker.APIClient(base_url=url, timeout=10).ping()
                reason = "it answered when asked again (a transient failure?)"
            except Exception as probe:  # any failure is the reason to report
                reason = str(probe)
            problems.append(f"{url}: {_plain_reason(url, reason)} [docker SDK: {reason}]")
        return AirflowException(
            f"Containerised training is on (AIRLOOP_CONTAINER_IMAGE={self.image}) but no Docker engine answers: "
            + "; ".join(problems)
            + ". Start the engine and give the worker its socket (or set DOCKER_HOST), "
            "or unset AIRLOOP_CONTAINER_IMAGE to train inside the worker."
        )

    def execute(self, context: Any) -> Any:
        try:
            api = self.hook.get_conn()  # connects: the hook pings the engine
        except AirflowException as exc:
            raise self._engine_unreachable() from exc
        # A one-shot task needs no health check, and the image's (`airflow jobs check`, ~3 s of CPU every 30 s)
        # would run beside training; the provider does not expose the setting, so this client's calls get it.
        api.create_container = functools.partial(api.create_container, healthcheck=Healthcheck(test=["NONE"]))
        try:
            last_line = super().execute(context)
        except DockerContainerFailedException as exc:
            raise AirflowException(failure_message(self.image, exc)) from exc
        try:
            return json.loads(last_line)
        except (TypeError, json.JSONDecodeError) as exc:
            raise AirflowException(f"the container's last line is not the JSON result: {last_line!r}") from exc


def failure_message(image: str, exc: DockerContainerFailedException) -> str:
    """A failed container in the task's error: its exit status and the tail of its log."""
    lines = [str(line).rstrip() for line in (exc.logs or [])][-LOG_TAIL:]
    return f"{exc} in image {image}; last {len(lines)} lines of its log:\n" + "\n".join(lines)


def train_in_container(image: str, **kwargs: Any) -> AirloopDockerOperator:
    """The ``train`` task as a container of ``image`` running ``airloop train`` with the worker's settings."""
    from airloop.config import get_settings

    settings = get_settings()
    volume, home = settings.container_data_volume, str(settings.home)
    return AirloopDockerOperator(
        task_id="train",
        image=image,
        command=TRAIN_COMMAND,
        # not templated, not shown in the UI, not serialized: computed where the task runs (the DAG is parsed there)
        private_environment=container_env(os.environ, settings.as_env()),
        mounts=[Mount(target=home, source=volume, type="bind" if volume.startswith("/") else "volume")],
        network_mode=settings.container_network,
        user=settings.container_user,
        auto_remove="force",  # removed after every run, failed or not
        mount_tmp_dir=False,  # the worker's /tmp is not the engine host's when the worker is itself a container
        **kwargs,
    )
