"""Airflow glue shared by airloop's DAGs: assets, schedule, default args. Cheap to import: the settings
object (pydantic, no heavy library) is read when a DAG file is parsed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, task

from airloop import lake
from airloop.config import get_settings
from airloop_alerts import notify_dag_failure, notify_failure

OWNER = "airloop"

# What the pipeline produces, named so the UI shows lineage and DAGs can be data-aware.
RAW_BATCH = Asset(name="airloop_raw_batch", uri=f"file://airloop/lake/{lake.RAW}")
VALIDATED_BATCH = Asset(name="airloop_validated_batch", uri=f"file://airloop/lake/{lake.VALIDATED}")
FEATURES = Asset(name="airloop_features", uri="file://airloop/feast/features")
MODEL = Asset(name="airloop_model", uri="mlflow://airloop/champion")
SCORES = Asset(name="airloop_scores", uri=f"file://airloop/lake/{lake.PREDICTIONS}")


def dag_defaults() -> dict[str, Any]:
    """What every airloop DAG shares, from the settings as they are where the file is parsed: pass as
    ``@dag(**dag_defaults(), ...)``. The start date is ``AIRLOOP_START_DATE`` (history loads of any year
    run; catchup stays off, so a new deployment schedules only the latest interval)."""
    settings = get_settings()
    return {
        "start_date": datetime.combine(settings.start_date, datetime.min.time()),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {
            "owner": OWNER,
            "retries": settings.task_retries,
            "retry_delay": timedelta(seconds=settings.task_retry_delay_seconds),
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=10),
            # one email per final failure (SmtpNotifier, smtp_default), not one per retry
            "on_failure_callback": notify_failure,
        },
        # safety net: a task killed by the OS never runs its own callback; the failed run still alerts
        "on_failure_callback": notify_dag_failure,
    }


def nightly(cron: str | None = None) -> CronDataIntervalTimetable:
    """Daily batches keyed by their data interval (``AIRLOOP_NIGHTLY_CRON`` in ``AIRLOOP_TIMEZONE``
    unless another cron is given); tasks use its logical date ``ds`` as the batch day. The daily
    interval is the calendar day of the batch (its run starts when the day ends); the monitor's
    (``AIRLOOP_MONITOR_CRON``) ends three hours later, after the daily chain has scored the same day."""
    settings = get_settings()
    return CronDataIntervalTimetable(cron or settings.nightly_cron, timezone=settings.timezone)


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


def materialize_day(upstream: Any) -> Any:
    """The materialization tasks of the daily and release DAGs, wired after ``upstream`` (a task's output with
    the day's ``ds``; call inside a DAG): ``materialize`` writes the day's offline features and registers the
    Feast repo (runs take turns), ``write_online`` is mapped over the ``AIRLOOP_ONLINE_WRITE_BUCKETS``
    entity-hash buckets (each loads its entities into the online store: at once on Redis, in turn on SQLite's
    single-writer file), and ``record_materialization`` sums them up. Returns the summary (with ``ds``).
    One bucket (SQLite's default): one ``materialize`` task does all three, without the extra tasks."""
    if get_settings().write_buckets == 1:

        @task(outlets=[FEATURES], max_active_tis_per_dag=1)
        def materialize(upstream: dict) -> dict:
            from airloop.config import get_settings
            from airloop.features import materialize_features

            return materialize_features(get_settings(), upstream["ds"])

        return materialize(upstream)

    @task(max_active_tis_per_dag=1)
    def materialize(upstream: dict) -> list[dict]:
        from airloop.config import get_settings
        from airloop.features import prepare_materialization

        prepared = prepare_materialization(get_settings(), upstream["ds"])
        return [{"prepared": prepared, "bucket": b} for b in range(prepared["buckets"])]

    @task
    def write_online(part: dict) -> dict:
        from airloop.config import get_settings
        from airloop.features import write_online_bucket

        prepared = part["prepared"]
        return write_online_bucket(get_settings(), prepared["ds"], part["bucket"], prepared["buckets"])

    @task(outlets=[FEATURES])
    def record_materialization(parts: list[dict], written: list[dict]) -> dict:
        from airloop.config import get_settings
        from airloop.features import record_materialization

        return record_materialization(get_settings(), parts[0]["prepared"], list(written))

    parts = materialize(upstream)
    return record_materialization(parts, write_online.expand(part=parts))


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
        # by index up to the count: iterating the lazy sequence probes one past its end (an [error] log line)
        parts = [shards[i] for i in range(len(shards))]
        return publish_scores(settings, parts, s3_client_kwargs(settings.s3_conn_id))

    return score(score_shard.expand(shard=plan_scoring(materialized)))


def approval_task() -> Any:
    """``approval``: Airflow's human-in-the-loop request for a challenger that passed the gate (the ``gate``
    task's XCom carries its subject and evidence). Approve / Reject with a reason; no answer within
    ``AIRLOOP_APPROVAL_TIMEOUT_HOURS`` answers Reject (recorded as timed out); only ``AIRLOOP_APPROVERS``
    may answer when set."""
    from airflow.providers.standard.operators.hitl import HITLOperator
    from airflow.sdk import Param

    settings = get_settings()
    return HITLOperator(
        task_id="approval",
        subject="{{ ti.xcom_pull(task_ids='gate')['request_subject'] }}",
        body="{{ ti.xcom_pull(task_ids='gate')['request_body'] }}",
        options=["Approve", "Reject"],
        defaults=["Reject"],
        params={"reason": Param(None, type=["null", "string"], description="Why (recorded on the model version)")},
        assigned_users=[{"id": user, "name": user} for user in settings.approvers] or None,
        response_timeout=timedelta(hours=settings.approval_timeout_hours),
        retries=0,
    )


def export_metrics(leaves: Any, *parts: str) -> None:
    """The last task of a DAG run, after ``leaves`` (a task or a list: every leaf of the DAG; call inside a
    DAG): refresh the Prometheus textfiles of ``parts`` (``lake``, ``registry``; see ``airloop.metrics``) under
    ``$AIRLOOP_HOME/metrics``. A teardown task: it runs whatever happened upstream (a quarantined batch is what
    the metrics must show) and its own state never decides the run's. ``AIRLOOP_METRICS_EXPORT=false``: no task."""
    if not get_settings().metrics_export:
        return

    @task(retries=1, retry_delay=timedelta(seconds=10))  # the next run refreshes them anyway
    def export_metrics() -> list[str]:
        from airloop.config import get_settings
        from airloop.metrics import write_textfiles

        return [str(p) for p in write_textfiles(get_settings(), parts)]

    leaves >> export_metrics().as_teardown()
