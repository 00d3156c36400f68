"""
### airloop daily: ingest → validate → materialize → score

Runs nightly for the day that just ended (its data interval).

1. **ingest** the landing batch of the day into `lake/raw/ds=<day>` (atomic, idempotent);
   (source: the landing folder, or S3 with `AIRLOOP_SOURCE=s3` and the `airloop_s3` connection);
2. **validate** it against the suite file with Great Expectations (Data Docs kept for every run);
   an unreadable batch or a failed `critical` expectation sends it to `lake/quarantine/ds=<day>`
   with `REASON.txt` and the task fails without retries, so nothing downstream runs; failed
   `warning` expectations are logged and passed on. Release a fixed batch with `airloop_release`;
3. **materialize** the day's features (the offline partition, with aggregates), register the Feast repo and
   load the online store; with `AIRLOOP_ONLINE_WRITE_BUCKETS` > 1 (Redis's default: 4) the online write is
   `write_online`, mapped over entity-hash buckets that write at once, and `record_materialization` sums up;
4. **score** the day's entities with `models:/<model>@champion` (skipped until a champion exists):
   `plan_scoring` fixes the model version and splits the day into shards of `AIRLOOP_SCORE_SHARD_ROWS`
   rows, `score_shard` is mapped over them (in parallel on every worker), and `score` publishes the
   shards as the day's predictions at once;
5. **export_metrics** (a teardown: it runs even after a quarantine, and never decides the run's state)
   rewrites the lake's Prometheus textfile, `$AIRLOOP_HOME/metrics/airloop_lake.prom` (`airloop.metrics`).

**Triggering.** Nightly at `AIRLOOP_NIGHTLY_CRON` (default `0 0 * * *`) in `AIRLOOP_TIMEZONE`, for the
interval that just ended; the run's logical date is the batch day. For one day by hand: *Trigger* →
*Single Run* with that logical date (optionally another `source`). For a date range: *Trigger* →
*Backfill*, or `airflow backfill create --dag-id airloop_daily --from-date A --to-date B` (the scheduler
must be running and the DAG unpaused): the runs overlap, but `validate` and `materialize` run one at a
time (they write shared stores; materializing an older day re-materializes through the newest one), and
each online-store bucket is written by one run at a time, newest days last, so the order of runs does
not matter. A backfill never trains or promotes.

**Alerts.** A failure emails `airloop_alert_emails` through `smtp_default` with the error and a link to
the log; a quarantined batch says so in the subject and lists the failed expectations.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airloop_dag_support import (
    RAW_BATCH,
    VALIDATED_BATCH,
    dag_defaults,
    export_metrics,
    fail_if_quarantined,
    materialize_day,
    nightly,
    s3_client_kwargs,
    score_day,
)


@dag(
    schedule=nightly(),
    **dag_defaults(),
    tags=["airloop", "daily"],
    doc_md=__doc__,
    params={
        "source": Param(
            None,
            type=["null", "string"],
            enum=[None, "local", "s3"],
            description="Where the day's batch is read from: the landing folder or S3 (default: AIRLOOP_SOURCE).",
        ),
    },
)
def airloop_daily():
    @task(outlets=[RAW_BATCH])
    def ingest(ds: str | None = None, params: dict | None = None) -> dict:
        from airloop.config import get_settings
        from airloop.ingest import ingest_batch

        settings = get_settings()
        if (params or {}).get("source"):
            settings = settings.model_copy(update={"source": params["source"]})
        with fail_if_quarantined():
            return ingest_batch(settings, ds, s3_client_kwargs=s3_client_kwargs(settings.s3_conn_id))

    # validate and materialize write shared stores (the GX project, the features zone and Feast registry):
    # one at a time across runs, so a backfill's parallel runs queue here instead of colliding
    @task(outlets=[VALIDATED_BATCH], max_active_tis_per_dag=1)
    def validate(ingested: dict) -> dict:
        from airloop.config import get_settings
        from airloop.validate import validate_batch

        with fail_if_quarantined():
            result = validate_batch(get_settings(), ingested["ds"])
        for warning in result["warnings"]:
            print(f"WARNING (not blocking): {warning}")
        return result

    export_metrics(score_day(materialize_day(validate(ingest()))), "lake")


airloop_daily()
