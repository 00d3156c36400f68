"""
### airloop train: train a challenger, then the promotion gate

Builds a point-in-time-correct training set from Feast for the validated days in the window,
trains a scikit-learn model, logs it to MLflow and registers it with alias `challenger`.
The gate then scores challenger and champion on the same held-out days: the challenger takes
alias `champion` only if it is at least as good (the first model: if it passes the floor).
The decision is written on the model version as tags. Backfill runs never promote.

Triggered by `airloop_monitor` (drift or cold start, with the reason in the run's conf) or by hand.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airloop_dag_support import DAG_DEFAULTS, MODEL


@dag(
    schedule=None,
    **DAG_DEFAULTS,
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
    },
)
def airloop_train():
    @task(outlets=[MODEL])
    def train(params: dict | None = None, ds: str | None = None, run_id: str | None = None) -> dict:
        from airloop.config import get_settings
        from airloop.storage import partition_dates
        from airloop.train import train_model

        settings = get_settings()
        end = params.get("end_date") or ds or partition_dates(settings.lake_dir / "validated")[-1]
        trigger = {"reason": params["reason"], "ds": params.get("trigger_ds") or "", "airflow_run_id": run_id}
        return train_model(
            settings, end, params["window_days"], params["model_type"], params.get("hyperparameters"), trigger=trigger
        )

    @task
    def gate(trained: dict, dag_run=None) -> dict:
        from airloop.config import get_settings
        from airloop.promote import evaluate_gate

        is_backfill = dag_run.run_type == "backfill" or bool(dag_run.conf.get("is_backfill"))
        decision = evaluate_gate(get_settings(), trained["version"], is_backfill=is_backfill)
        print(f"Gate: version {decision['version']} {decision['decision']}: {decision['reason']}")
        return {k: decision[k] for k in ("version", "decision", "reason", "champion_version")}

    gate(train())


airloop_train()
