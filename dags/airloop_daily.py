"""
### airloop daily: ingest → validate → materialize → score

Runs nightly for the day that just ended (its data interval).

1. **ingest** the landing batch of the day into `lake/raw/ds=<day>` (atomic, idempotent);
2. **validate** it with Great Expectations; a failing batch goes to `lake/quarantine/ds=<day>`
   with `REASON.txt` and the task fails without retries, so nothing downstream runs;
3. **materialize** the day's features into the Feast online store;
4. **score** the day's customers with `models:/airloop_churn@champion` (skipped until a champion exists).

Backfill a range with `airflow backfill create --dag-id airloop_daily --from-date A --to-date B`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from airloop_dag_support import (
    DAG_DEFAULTS,
    FEATURES,
    RAW_BATCH,
    SCORES,
    VALIDATED_BATCH,
    nightly,
)


@dag(
    schedule=nightly(),
    **DAG_DEFAULTS,
    tags=["airloop", "daily"],
    doc_md=__doc__,
)
def airloop_daily():
    @task(outlets=[RAW_BATCH])
    def ingest(ds: str | None = None) -> dict:
        from airloop.config import get_settings
        from airloop.ingest import ingest_batch

        return ingest_batch(get_settings(), ds)

    @task(outlets=[VALIDATED_BATCH])
    def validate(ingested: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from airloop.config import get_settings
        from airloop.validate import BatchQuarantined, validate_batch

        try:
            return validate_batch(get_settings(), ingested["ds"])
        except BatchQuarantined as exc:  # bad data: retrying cannot help
            raise AirflowFailException(str(exc)) from exc

    @task(outlets=[FEATURES])
    def materialize(validated: dict) -> dict:
        from airloop.config import get_settings
        from airloop.features import materialize_features

        return materialize_features(get_settings(), validated["ds"])

    @task(outlets=[SCORES])
    def score(materialized: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from airloop.config import get_settings
        from airloop.score import NoChampion, score_batch

        try:
            return score_batch(get_settings(), materialized["ds"])
        except NoChampion as exc:
            raise AirflowSkipException(str(exc)) from exc

    score(materialize(validate(ingest())))


airloop_daily()
