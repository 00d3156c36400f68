"""
### airloop release: put a fixed quarantined batch back into the pipeline

After fixing a quarantined batch (edit `lake/quarantine/ds=<day>/data.parquet`, or point `path` at
a corrected file or folder), trigger this DAG with the date. It re-ingests and re-validates the batch
with the same code as `airloop_daily`; only if it passes does it leave quarantine, and then its
features are materialized and it is scored. If it still fails, it stays quarantined and the task
says why. The same from a shell: `airloop release --date <day> [--path FILE]`.

**Triggering.** *Trigger* → *Single Run*, fill `date` (and `path` if the fixed batch is elsewhere).
A date that is not in quarantine fails at once, without retries. Failures email `airloop_alert_emails`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airloop_dag_support import (
    VALIDATED_BATCH,
    dag_defaults,
    export_metrics,
    fail_if_quarantined,
    materialize_day,
    score_day,
)


@dag(
    schedule=None,
    **dag_defaults(),
    tags=["airloop", "data-quality"],
    doc_md=__doc__,
    params={
        "date": Param(type="string", format="date", description="The quarantined date to release."),
        "path": Param(
            None,
            type=["null", "string"],
            description="Fixed file or folder (default: the quarantined batch, edited in place).",
        ),
    },
)
def airloop_release():
    @task(outlets=[VALIDATED_BATCH])
    def release(params: dict | None = None) -> dict:
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from airloop.config import get_settings
        from airloop.release import release_batch

        with fail_if_quarantined():
            try:
                return release_batch(get_settings(), params["date"], Path(params["path"]) if params["path"] else None)
            except FileNotFoundError as exc:  # nothing to release there: a retry cannot help
                raise AirflowFailException(str(exc)) from exc

    export_metrics(score_day(materialize_day(release())), "lake")


airloop_release()
