"""
### airloop train: train a challenger, then the promotion gate

Builds a point-in-time-correct training set from Feast for the validated days in the window,
trains a scikit-learn model, logs it to MLflow and registers it with alias `challenger`.
The gate then scores challenger and champion on the same rows (the frozen holdout plus labelled
days after the training window): the challenger takes alias `champion` only if every configured
rule passes — floor, minimum evaluation rows, non-inferiority by a paired-bootstrap confidence
interval, per-slice floors, size/latency budget, and a passing validation of every training day
(the first model needs no comparison). The decision, its evidence and a model card are recorded
on the model version; the task log says which rule decided. A run asked for by a backfill of
`airloop_monitor` never promotes (`is_backfill`, unless `AIRLOOP_BACKFILL_PROMOTES`); this DAG has
no schedule, so Airflow never backfills it.
With `AIRLOOP_PROMOTION_APPROVAL=required` a pass waits in `approval` for a person's Approve/Reject
(Required Actions), and `record_approval` moves the aliases or records the rejection.
To undo a promotion, trigger `airloop_rollback`.

Triggered by `airloop_monitor` (drift or cold start, with the reason in the run's conf) or by hand.
With `AIRLOOP_CONTAINER_IMAGE` set, `train` runs `airloop train` in a container of that image.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airloop.config import get_settings
from airloop_dag_support import MODEL, dag_defaults, export_metrics


@dag(
    schedule=None,
    **dag_defaults(),
    tags=["airloop", "training"],
    doc_md=__doc__,
    params={
        "end_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Last day of the training window (default: the run's date, else the latest validated day).",
        ),
        "window_days": Param(
            None,
            type=["null", "integer"],
            minimum=2,
            maximum=365,
            description="Days in the training window (default: AIRLOOP_TRAIN_WINDOW_DAYS).",
        ),
        "model_type": Param(
            None,
            type=["null", "string"],
            enum=[None, "logistic_regression", "ridge", "hist_gradient_boosting"],
            description="Estimator: logistic_regression or hist_gradient_boosting for classification, ridge or "
            "hist_gradient_boosting for regression (default: AIRLOOP_MODEL_TYPE, else the task's default).",
        ),
        "hyperparameters": Param(
            {},
            type="object",
            description='Estimator keyword arguments, e.g. {"C": 0.5} or {"max_iter": 300, "learning_rate": 0.05}.',
        ),
        "reason": Param("manual", type="string", description="Why this run trains (recorded in MLflow)."),
        # set by airloop_monitor's retrain request (airloop.policy.RetrainRequest); a person leaves them
        "trigger": Param(
            "manual",
            type="string",
            enum=["manual", "bootstrap", "retrain"],
            description="What started this run: a person, the monitor's cold start or its retraining policy.",
        ),
        "causes": Param(
            [], type="array", description="What the monitor saw: bootstrap, drift and/or performance (else empty)."
        ),
        "trigger_ds": Param(
            None,
            type=["null", "string"],
            format="date",
            description="The day of the monitor check that asked for this run (else empty).",
        ),
        "is_backfill": Param(
            False,
            type="boolean",
            description="Judge the model but never promote it (set by a backfill run of airloop_monitor).",
        ),
    },
)
def airloop_train():
    @task(outlets=[MODEL])
    def train(params: dict | None = None, ds: str | None = None, run_id: str | None = None) -> dict:
        from airloop.config import get_settings
        from airloop.train import train_model

        settings = get_settings()
        end = params["end_date"] or ds  # None: the latest validated day
        trigger = {
            "trigger": params["trigger"],
            "causes": params["causes"],
            "reason": params["reason"],
            "ds": params["trigger_ds"] or "",
            "airflow_run_id": run_id,
        }
        return train_model(
            settings, end, params["window_days"], params["model_type"], params.get("hyperparameters"), trigger=trigger
        )

    image = get_settings().container_image  # optional: `airloop train` in a container (plugins/airloop_container.py)
    if image:
        from airloop_container import train_in_container

        trained = train_in_container(image, outlets=[MODEL]).output
    else:
        trained = train()

    @task
    def gate(trained: dict, dag_run=None, params: dict | None = None) -> dict:
        from airloop.config import get_settings
        from airloop.promote import approval_request, evaluate_gate, explain_decision

        settings = get_settings()
        # a backfill's training run never promotes: the monitor's backfill run says so in the request (this
        # DAG has no schedule, so its own runs are never backfill runs)
        actor = f"airflow:{dag_run.run_id}"
        approval = settings.promotion_approval == "required"
        decision = evaluate_gate(
            settings, trained["version"], is_backfill=params["is_backfill"], actor=actor, approval=approval
        )
        print(explain_decision(decision))
        from airloop_alerts import announce_promotion

        announce_promotion(decision, run_id=dag_run.run_id)
        judged = {k: decision[k] for k in ("version", "decision", "reason", "champion_version", "failed_rules")}
        if decision["decision"] == "awaiting_approval":  # the request the approval task shows
            judged["request_subject"], judged["request_body"] = approval_request(settings, decision)
        return judged

    judged = gate(trained)
    leaves = [judged]

    if get_settings().promotion_approval == "required":
        # a person answers in Required Actions (or the HITL REST API); the waiting task holds no worker slot
        from airloop_dag_support import approval_task

        @task.short_circuit
        def awaits_approval(judged: dict) -> bool:
            return judged["decision"] == "awaiting_approval"

        @task
        def record_approval(judged: dict, answer: dict) -> dict:
            from airloop.config import get_settings
            from airloop.promote import answer_approval, explain_decision

            chosen, by = answer["chosen_options"], (answer.get("responded_by_user") or {}).get("name")
            reason = (answer.get("params_input") or {}).get("reason") or ""
            decision = answer_approval(get_settings(), judged["version"], chosen == ["Approve"], by, reason)
            print(explain_decision(decision))
            from airloop_alerts import announce_promotion

            announce_promotion(decision)
            return {k: decision[k] for k in ("version", "decision", "reason", "approval")}

        approval = approval_task()
        awaits_approval(judged) >> approval
        leaves.append(record_approval(judged, approval.output))

    export_metrics(leaves, "registry")


airloop_train()
