"""Airflow glue shared by airloop's DAGs: assets, schedule, default args. Cheap to import."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, task

from airloop_alerts import notify_dag_failure, notify_failure

OWNER = "airloop"
START_DATE = datetime(2026, 1, 1)
# The daily interval is the calendar day of the batch (its run starts when the day ends); the
# monitor's interval ends three hours later, after the daily chain has scored the same day.
NIGHTLY_CRON = os.environ.get("AIRLOOP_NIGHTLY_CRON", "0 0 * * *")
MONITOR_CRON = os.environ.get("AIRLOOP_MONITOR_CRON", "0 3 * * *")
TIMEZONE = os.environ.get("AIRLOOP_TIMEZONE", "UTC")

# What the pipeline produces, named so the UI shows lineage and DAGs can be data-aware.
RAW_BATCH = Asset(name="airloop_raw_batch", uri="file://airloop/lake/raw")
VALIDATED_BATCH = Asset(name="airloop_validated_batch", uri="file://airloop/lake/validated")
FEATURES = Asset(name="airloop_features", uri="file://airloop/feast/customer_snapshot_fv")
MODEL = Asset(name="airloop_model", uri="mlflow://airloop_churn")
SCORES = Asset(name="airloop_scores", uri="file://airloop/lake/predictions")

DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": int(os.environ.get("AIRLOOP_TASK_RETRIES", "2")),
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    # one email per final failure (SmtpNotifier, smtp_default), not one per retry
    "on_failure_callback": notify_failure,
}

# What every airloop DAG shares: pass as ``@dag(**DAG_DEFAULTS, ...)``.
DAG_DEFAULTS = {
    "start_date": START_DATE,
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
    # safety net: a task killed by the OS never runs its own callback; the failed run still alerts
    "on_failure_callback": notify_dag_failure,
}


def nightly(cron: str = NIGHTLY_CRON) -> CronDataIntervalTimetable:
    """Daily batches keyed by their data interval; tasks use its logical date ``ds`` as the batch day."""
    return CronDataIntervalTimetable(cron, timezone=TIMEZONE)


@contextmanager
def fail_if_quarantined() -> Iterator[None]:
    """Turn a quarantined batch into a task failure without retries: retrying bad data cannot help."""
    from airflow.sdk.exceptions import AirflowFailException

    from airloop.quarantine import BatchQuarantined

    try:
        yield
    except BatchQuarantined as exc:
        raise AirflowFailException(str(exc)) from exc


def s3_client_kwargs(conn_id: str) -> dict[str, Any]:
    """boto3 client arguments from an Airflow connection (login/password, extras endpoint_url and
    region_name); empty when no such connection exists, so boto3's own environment applies."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return {}
    extra = conn.extra_dejson
    found = {
        "aws_access_key_id": conn.login,
        "aws_secret_access_key": conn.password,
        "endpoint_url": extra.get("endpoint_url"),
        "region_name": extra.get("region_name"),
    }
    return {k: v for k, v in found.items() if v}


def materialize_day(ds: str) -> dict:
    """Task body shared by the daily and release DAGs: the day's features into Feast."""
    from airloop.config import get_settings
    from airloop.features import materialize_features

    return materialize_features(get_settings(), ds)


def score_day(materialized: Any) -> Any:
    """The scoring tasks of the daily and release DAGs, wired after ``materialized`` (call inside a DAG):
    ``plan_scoring`` fixes the model versions and splits the day into shards (skipped until a champion
    exists), ``score_shard`` is mapped over them (in parallel on every worker), and ``score`` publishes
    the shards as the day's predictions at once."""

    @task
    def plan_scoring(materialized: dict) -> list[dict]:
        from airflow.sdk.exceptions import AirflowSkipException

        from airloop.config import get_settings
        from airloop.score import NoChampion, plan_scoring

        try:
            return plan_scoring(get_settings(), materialized["ds"])
        except NoChampion as exc:
            raise AirflowSkipException(str(exc)) from exc

    @task
    def score_shard(shard: dict) -> dict:
        from airloop.config import get_settings
        from airloop.score import score_shard

        return score_shard(get_settings(), shard)

    @task(outlets=[SCORES])
    def score(shards: list[dict]) -> dict:
        from airloop.config import get_settings
        from airloop.score import publish_scores

        settings = get_settings()
        return publish_scores(settings, list(shards), s3_client_kwargs(settings.s3_conn_id))

    return score(score_shard.expand(shard=plan_scoring(materialized)))
