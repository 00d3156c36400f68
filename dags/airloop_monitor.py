"""
### airloop monitor: drift check → branch → retrain or not

Nightly, after the daily chain, compares the recent validated days with the champion's training
window using Evidently's DataDriftPreset, writes `monitoring/ds=<day>/report.html` and
`result.json`, then branches:

* `trigger_retrain` when there is no champion yet (cold start) or the share of drifted columns
  passes the threshold, outside the retrain cool-down: triggers `airloop_train` with the reason in its conf;
* `alert_only` when drift persists inside the cool-down;
* `no_action` otherwise.
"""

from __future__ import annotations

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from airloop_alerts import notify_retrain
from airloop_dag_support import DAG_DEFAULTS, MONITOR_CRON, nightly

RESULT = "ti.xcom_pull(task_ids='check_drift')"


@dag(
    schedule=nightly(MONITOR_CRON),
    **DAG_DEFAULTS,
    tags=["airloop", "monitoring"],
    doc_md=__doc__,
)
def airloop_monitor():
    @task
    def check_drift(ds: str | None = None) -> dict:
        from airloop.config import get_settings
        from airloop.monitor import check_drift as check

        result = check(get_settings(), ds)
        print(f"Monitor {ds}: {result['action']}: {result['reason']}")
        return {k: result[k] for k in ("ds", "action", "reason", "drift_share")}

    @task.branch
    def decide(result: dict) -> str:
        return {"bootstrap": "trigger_retrain", "retrain": "trigger_retrain", "cooldown": "alert_only"}.get(
            result["action"], "no_action"
        )

    trigger_retrain = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="airloop_train",
        trigger_run_id="retrain__{{ ds }}",
        logical_date="{{ logical_date }}",
        skip_when_already_exists=True,
        on_success_callback=notify_retrain,
        conf={"reason": "{{ " + RESULT + "['action'] }}", "trigger_ds": "{{ ds }}", "end_date": "{{ ds }}"},
    )

    @task
    def alert_only(result: dict) -> None:
        print(f"ALERT (no retrain, cool-down): {result['reason']}")

    result = check_drift()
    decide(result) >> [trigger_retrain, alert_only(result), EmptyOperator(task_id="no_action")]


airloop_monitor()
