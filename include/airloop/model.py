"""The model's rules, in one place: what a model outputs, the metrics (name, direction, function) with
one decision threshold, the estimators per task, and the names under which MLflow records a run.

Train, promote, score, monitor, the model card, lineage and status import these; none re-spells them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # cheap to import: the settings (read where DAGs are parsed) check metric names here
    import numpy as np

    from airloop.config import Settings

TASKS = ("binary_classification", "regression")
DECISION_THRESHOLD = 0.5  # P(positive) at or above it: the predicted class is positive


def predicted_class(proba: np.ndarray) -> np.ndarray:
    """The class a probability stands for (``DECISION_THRESHOLD``)."""
    import numpy as np

    return (np.asarray(proba) >= DECISION_THRESHOLD).astype("int64")


def predict(settings: Settings, model: Any, X: Any) -> np.ndarray:
    """The model's output the metrics use: P(positive) for classification, the value for regression."""
    import numpy as np

    if settings.spec.task == "binary_classification":
        return model.predict_proba(X)[:, 1]
    return np.asarray(model.predict(X), dtype="float64")


# ----------------------------------------------------------------------------------------- metrics


def _sk(name: str) -> Callable[..., float]:
    def fn(y: np.ndarray, pred: np.ndarray) -> float:
        import sklearn.metrics

        return float(getattr(sklearn.metrics, name)(y, pred))

    return fn


def _accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y, predicted_class(pred)))


def _log_loss(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y, pred, labels=[0, 1]))


@dataclass(frozen=True)
class Metric:
    """One metric of a task: its direction, its function of (labels, model output) and the fewest
    distinct labels it is defined on."""

    name: str
    task: str
    higher_is_better: bool
    fn: Callable[[np.ndarray, np.ndarray], float]
    min_classes: int = 1


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("roc_auc", "binary_classification", True, _sk("roc_auc_score"), 2),
        Metric("average_precision", "binary_classification", True, _sk("average_precision_score"), 2),
        Metric("accuracy", "binary_classification", True, _accuracy),
        Metric("log_loss", "binary_classification", False, _log_loss),
        Metric("r2", "regression", True, _sk("r2_score")),
        Metric("rmse", "regression", False, _sk("root_mean_squared_error")),
        Metric("mae", "regression", False, _sk("mean_absolute_error")),
    )
}


def gate_metrics(task: str) -> list[str]:
    """Metrics the gate may use as its primary metric (higher is better) for a task."""
    return [m.name for m in METRICS.values() if m.task == task and m.higher_is_better]


def metric_value(name: str, y: np.ndarray, pred: np.ndarray) -> float:
    """One metric on these rows; NaN when it is undefined on them (one class for AUC, < 2 rows for R²)."""
    import numpy as np

    metric = METRICS.get(name)
    if metric is None:
        raise ValueError(f"unknown metric {name!r}; metrics: {sorted(METRICS)}")
    if len(y) < 2 or len(np.unique(y)) < metric.min_classes:
        return float("nan")
    return metric.fn(np.asarray(y), np.asarray(pred))


def metrics(settings: Settings, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of the spec's task on these rows."""
    return {m.name: metric_value(m.name, y, pred) for m in METRICS.values() if m.task == settings.spec.task}


# ------------------------------------------------------------------------- estimators and defaults

MODEL_TYPES = {
    "binary_classification": ("logistic_regression", "hist_gradient_boosting"),
    "regression": ("ridge", "hist_gradient_boosting"),
}
TASK_DEFAULTS = {
    "binary_classification": {"metric": "roc_auc", "floor": 0.6, "model_type": "logistic_regression"},
    "regression": {"metric": "r2", "floor": 0.0, "model_type": "ridge"},
}

# ------------------------------------------------------------- names MLflow records a training run by

PARAM_MODEL_TYPE = "model_type"
PARAM_TRAIN_START = "train_start"
PARAM_TRAIN_END = "train_end"
PARAM_FEATURE_SERVICE = "feature_service"
PARAM_HOLDOUT_DAYS = "holdout_days"
PARAM_VALIDATION_DAYS = "validation_days"
PARAM_LABEL_SOURCE = "label_source"  # feed | batch (airloop.labels.training_labels)
HYPERPARAMETER_PREFIX = "hp_"
TAG_GIT_COMMIT = "git_commit"
TAG_TRIGGER = "airloop.trigger"  # manual | bootstrap | retrain
TAG_TRIGGER_CAUSES = "airloop.trigger_causes"  # bootstrap, drift, performance
TAG_TRIGGER_REASON = "airloop.trigger_reason"  # why, in words
TAG_TRIGGER_DS = "airloop.trigger_ds"
TAG_AIRFLOW_RUN_ID = "airloop.airflow_run_id"
TAG_GATE_DECISION = "airloop.gate.decision"
TAG_GATE_REASON = "airloop.gate.reason"
TAG_MODEL_CARD = "airloop.model_card"
HOLDOUT_ARTIFACT = "evaluation/holdout.parquet"
TRAINING_DATA_ARTIFACT = "lineage/training_data.json"


def train_window(run: Any) -> tuple[str, str]:
    """First and last training day of an MLflow training run."""
    return run.data.params[PARAM_TRAIN_START], run.data.params[PARAM_TRAIN_END]
