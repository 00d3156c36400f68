"""
### airloop monitor: Evidently checks → branch → retrain, alert or nothing

Nightly, after the daily chain has scored the day:

1. `collect_labels` moves the label files that have arrived (they come `AIRLOOP_LABEL_DELAY_DAYS`
   after the scored day) into `lake/labels/`;
2. `check` builds Evidently reports on the champion: data drift and a data summary of the features
   (reference = its training window, current = the recent validated days), drift of its predictions,
   and its classification / regression performance on the labelled scored days. It writes
   `monitoring/ds=<day>/` (HTML reports and `result.json`), `monitoring/history.csv`, and logs the
   numbers to MLflow against the champion's version; then it applies the retraining policy;
3. `route` (a real branch) follows the action of the retraining policy to exactly one of:
   * `request_retrain` → `trigger_retrain`: no champion yet, or drift persisted for
     `AIRLOOP_DRIFT_PERSIST_CHECKS` checks, or performance fell below the floor; outside the cool-down,
     with enough new labelled rows and no training run already queued or running. Triggers
     `airloop_train` with the request (trigger, causes, reason, day) as its conf; a backfill run of this
     DAG marks its request `is_backfill`, so that training run never promotes (unless
     `AIRLOOP_BACKFILL_PROMOTES`);
   * `alert_only`: something is wrong but the policy holds the retrain back (cool-down, drift not yet
     persistent, too few new labels, a training run in flight);
   * `no_action`;
4. with `AIRLOOP_CANARY_FRACTION`, `judge_canary` compares the canary with the champion on their own
   labelled entities and promotes or withdraws it once the evidence is enough (`airloop.canary`);
5. `export_metrics` (a teardown, whatever the branch) rewrites the Prometheus textfiles under
   `$AIRLOOP_HOME/metrics/` (the lake's and the registry's; `airloop.metrics`).
"""

from __future__ import annotations

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from airloop.config import get_settings
from airloop_alerts import notify_retrain
from airloop_dag_support import dag_defaults, export_metrics, nightly

TRAIN_DAG = "airloop_train"


@dag(
    schedule=nightly(get_settings().monitor_cron),
    **dag_defaults(),
    tags=["airloop", "monitoring"],
    doc_md=__doc__,
)
def airloop_monitor():
    @task
    def collect_labels(ds: str | None = None) -> dict:
        from airloop.config import get_settings
        from airloop.labels import collect_labels as collect

        return collect(get_settings(), ds)

    @task
    def check(labels: dict, ds: str | None = None, ti=None) -> dict:
        from airloop.config import get_settings
        from airloop.monitor import run_checks

        in_flight = ti.get_dr_count(dag_id=TRAIN_DAG, states=["queued", "running"])
        result = run_checks(get_settings(), ds, active_training=in_flight)
        print(f"Monitor {ds}: {result['action']}: {result['reason']}")
        keys = ("ds", "action", "reason", "causes", "drift_share", "performance", "report")
        return {k: result.get(k) for k in keys}

    @task.branch
    def route(result: dict) -> str:
        from airloop.policy import ALERT_ACTIONS, TRIGGER_ACTIONS

        if result["action"] in TRIGGER_ACTIONS:
            return "request_retrain"
        return "alert_only" if result["action"] in ALERT_ACTIONS else "no_action"

    @task
    def request_retrain(result: dict, dag_run=None) -> dict:
        from airloop.config import get_settings
        from airloop.policy import retrain_request

        # the training run TriggerDagRunOperator creates is no backfill run: the request says it comes from one
        backfill = dag_run.run_type == "backfill" and not get_settings().backfill_promotes
        return dict(retrain_request(result, backfill=backfill))

    @task
    def alert_only(result: dict) -> None:
        from airloop_alerts import send_event

        message = f"airloop monitor {result['ds']} ({result['action']}, no retrain): {result['reason']}"
        print(f"ALERT {message}")
        send_event("drift", f"monitor alert without retrain ({result['ds']})", message)

    result = check(collect_labels())
    leaves = []

    if get_settings().canary_fraction > 0:

        @task
        def judge_canary(result: dict, ds: str | None = None) -> dict | None:
            """The canary against the champion on their own labelled entities: promote, withdraw or wait."""
            from airloop.canary import COLLECTING, judge
            from airloop.config import get_settings
            from airloop_alerts import announce_promotion

            decision = judge(get_settings(), ds)
            if decision is None:
                return None
            print(f"Canary v{decision['version']}: {decision['decision']}: {decision['reason']}")
            if decision["decision"] != COLLECTING:
                announce_promotion(decision)
            return {k: decision[k] for k in ("version", "decision", "reason")}

        leaves.append(judge_canary(result))

    request = request_retrain(result)
    alerted, nothing = alert_only(result), EmptyOperator(task_id="no_action")
    route(result) >> [request, alerted, nothing]
    retrain = TriggerDagRunOperator(  # the request is the run's conf: each key is a Param of airloop_train
        task_id="trigger_retrain",
        trigger_dag_id=TRAIN_DAG,
        trigger_run_id="retrain__{{ ds }}",
        logical_date="{{ logical_date }}",
        skip_when_already_exists=True,
        on_success_callback=notify_retrain,
        conf=request,
    )
    export_metrics([retrain, alerted, nothing, *leaves], "lake", "registry")


airloop_monitor()
