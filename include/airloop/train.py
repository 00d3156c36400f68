"""Train: a point-in-time-correct training set from Feast, a scikit-learn model, tracked in MLflow."""

from __future__ import annotations

import subprocess
import tempfile
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from airloop import lake
from airloop import model as m
from airloop.config import PROJECT_DIR, Settings
from airloop.features import training_frame
from airloop.labels import LABEL_DAY, training_labels
from airloop.lineage import data_lineage
from airloop.model import MODEL_TYPES, metrics, predict, predicted_class
from airloop.registry import CHALLENGER, client
from airloop.storage import date_range


def build_pipeline(settings: Settings, model_type: str, params: dict[str, Any] | None = None) -> Any:
    """An sklearn Pipeline: impute + scale numerics, one-hot categoricals, then the estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    spec = settings.spec
    params = dict(params or {})
    classify = spec.task == "binary_classification"
    if model_type not in MODEL_TYPES[spec.task]:
        raise ValueError(f"unknown model_type {model_type!r} for {spec.task}; choose from {MODEL_TYPES[spec.task]}")
    if model_type == "logistic_regression":
        estimator = LogisticRegression(max_iter=1000, **{"C": 1.0, **params})
    elif model_type == "ridge":
        estimator = Ridge(**{"alpha": 1.0, **params})
    else:
        hgb = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        estimator = hgb(random_state=settings.seed, **{"max_iter": 200, **params})
    pre = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                [*spec.numeric_features, *spec.aggregate_names],
            ),
            ("cat", OneHotEncoder(handle_unknown="ignore"), spec.categorical_features),
        ]
    )
    return Pipeline([("pre", pre), ("model", estimator)])


def plots(settings: Settings, pipe: Any, part: pd.DataFrame, proba: np.ndarray) -> dict[str, Any]:
    """Diagnostic plots on the validation slice, as matplotlib figures: ROC, precision-recall,
    calibration and confusion matrix (classification) or predicted-vs-actual and residuals
    (regression), and permutation feature importance for both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import (
        ConfusionMatrixDisplay,
        PrecisionRecallDisplay,
        PredictionErrorDisplay,
        RocCurveDisplay,
    )

    spec = settings.spec
    y = part[spec.label].to_numpy()
    if spec.task == "binary_classification":
        figs = {
            "roc_curve": RocCurveDisplay.from_predictions(y, proba).figure_,
            "pr_curve": PrecisionRecallDisplay.from_predictions(y, proba).figure_,
            "calibration": CalibrationDisplay.from_predictions(y, proba, n_bins=10).figure_,
            "confusion_matrix": ConfusionMatrixDisplay.from_predictions(y, predicted_class(proba)).figure_,
        }
        scoring = "roc_auc"
    else:
        figs = {
            "predicted_vs_actual": PredictionErrorDisplay.from_predictions(
                y, proba, kind="actual_vs_predicted"
            ).figure_,
            "residuals": PredictionErrorDisplay.from_predictions(y, proba, kind="residual_vs_predicted").figure_,
        }
        scoring = "r2"
    imp = permutation_importance(
        pipe, part[spec.model_features], y, scoring=scoring, n_repeats=5, random_state=settings.seed
    )
    order = np.argsort(imp.importances_mean)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh(np.array(spec.model_features)[order], imp.importances_mean[order], xerr=imp.importances_std[order])
    ax.set_xlabel(f"permutation importance (drop in {scoring}, validation slice)")
    fig.tight_layout()
    figs["feature_importance"] = fig
    for f in figs.values():
        plt.close(f)
    return figs


def training_window(settings: Settings, end_ds: str, window_days: int) -> list[str]:
    """Validated dates in the window ending at ``end_ds`` (quarantined days are left out)."""
    days = date_range(end_ds, window_days)
    return lake.dates(settings, lake.VALIDATED, days[0], days[-1])


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def train_model(
    settings: Settings,
    end_ds: str | None,
    window_days: int | None = None,
    model_type: str | None = None,
    params: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict:
    """Train on the validated window ending at ``end_ds`` (default: the latest validated day), log everything
    to MLflow, register the model and give it the ``challenger`` alias. The last ``holdout_days`` are held out
    (time split)."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    if not end_ds:
        validated = lake.dates(settings, lake.VALIDATED)
        if not validated:
            raise ValueError(f"no validated day under {lake.zone_dir(settings, lake.VALIDATED)} to train on yet")
        end_ds = validated[-1]
    spec = settings.spec
    window_days = window_days or settings.train_window_days
    model_type = model_type or settings.estimator
    validated = training_window(settings, end_ds, window_days)
    labels = training_labels(settings, validated, as_of=end_ds)
    dates = sorted(set(labels[LABEL_DAY]))  # the validated days whose labels are known on end_ds
    if len(dates) < settings.min_train_days:
        raise ValueError(
            f"only {len(dates)} labelled validated days ({len(validated)} validated) in the {window_days}-day "
            f"window ending {end_ds} (labels from the {settings.label_source}, AIRLOOP_LABEL_SOURCE); "
            f"training needs at least {settings.min_train_days} (AIRLOOP_MIN_TRAIN_DAYS)"
        )
    n_eval = settings.holdout_days + settings.validation_days
    if len(dates) <= n_eval:
        raise ValueError(
            f"{len(dates)} validated days cannot be split into train + {settings.validation_days} validation "
            f"+ {settings.holdout_days} holdout days: widen the window or lower AIRLOOP_HOLDOUT_DAYS"
        )
    frame = training_frame(settings, labels.drop(columns=LABEL_DAY)).sort_values(
        [spec.timestamp, spec.entity], kind="stable"
    )
    day = frame[spec.timestamp].dt.strftime("%Y-%m-%d")
    splits = {  # by time: train on the past, validate on the recent slice, hold out the most recent
        "train": frame[day.isin(dates[:-n_eval])],
        "validation": frame[day.isin(dates[-n_eval : -settings.holdout_days])],
        "holdout": frame[day.isin(dates[-settings.holdout_days :])],
    }
    train, holdout = splits["train"], splits["holdout"]
    if spec.task == "binary_classification" and train[spec.label].nunique() < 2:
        raise ValueError(f"the training days {dates[0]}..{dates[-n_eval - 1]} hold only one class")

    X, y = train[spec.model_features], train[spec.label].to_numpy()
    try:
        pipe = build_pipeline(settings, model_type, params).fit(X, y)
    except TypeError as exc:  # an unknown hyperparameter
        raise ValueError(f"bad hyperparameters {params} for {model_type}: {exc}") from exc
    scores = {name: predict(settings, pipe, part[spec.model_features]) for name, part in splits.items()}
    split_metrics = {
        name: metrics(settings, part[spec.label].to_numpy(), scores[name]) for name, part in splits.items()
    }

    c = client(settings)
    trigger = trigger or {}
    with mlflow.start_run(run_name=f"train_{end_ds}") as run:
        mlflow.log_params(
            {
                m.PARAM_MODEL_TYPE: model_type,
                **{f"{m.HYPERPARAMETER_PREFIX}{k}": v for k, v in (params or {}).items()},
                m.PARAM_TRAIN_START: dates[0],
                m.PARAM_TRAIN_END: dates[-1],
                "window_days": window_days,
                m.PARAM_HOLDOUT_DAYS: settings.holdout_days,
                m.PARAM_VALIDATION_DAYS: settings.validation_days,
                m.PARAM_LABEL_SOURCE: settings.label_source,
                "requested_end": end_ds,
                m.PARAM_FEATURE_SERVICE: spec.feature_service_name,
                "features": ",".join(spec.model_features),
                "seed": settings.seed,
            }
        )
        for name, values in split_metrics.items():
            mlflow.log_metrics({f"{name}_{k}": v for k, v in values.items()})
            mlflow.log_metric(f"rows_{name}", len(splits[name]))
        for name, fig in plots(settings, pipe, splits["validation"], scores["validation"]).items():
            mlflow.log_figure(fig, f"plots/{name}.png")
        mlflow.set_tags(
            {
                m.TAG_GIT_COMMIT: _git_commit(),
                m.TAG_TRIGGER: trigger.get("trigger") or "manual",
                m.TAG_TRIGGER_CAUSES: ",".join(trigger.get("causes") or []),
                m.TAG_TRIGGER_REASON: trigger.get("reason") or "manual",
                m.TAG_TRIGGER_DS: trigger.get("ds", ""),
                m.TAG_AIRFLOW_RUN_ID: trigger.get("airflow_run_id", ""),
                **{f"version.{p}": pkg_version(p) for p in ("scikit-learn", "pandas", "feast", "mlflow")},
            }
        )
        dataset = mlflow.data.from_pandas(
            train,
            source=str(lake.zone_dir(settings, lake.VALIDATED)),
            name=f"train_{dates[0]}_{dates[-1]}",
            targets=spec.label,
        )
        mlflow.log_input(dataset, context="training")
        mlflow.log_dict(data_lineage(settings, dates), m.TRAINING_DATA_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:  # the run's artifact store is the one copy
            holdout_path = Path(tmp) / Path(m.HOLDOUT_ARTIFACT).name
            holdout.to_parquet(holdout_path, index=False)
            mlflow.log_artifact(str(holdout_path), artifact_path=str(Path(m.HOLDOUT_ARTIFACT).parent))
        example = X.head(5)
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=infer_signature(example, predict(settings, pipe, example)),
            input_example=example,
            registered_model_name=settings.registered_model,
            pip_requirements=[
                f"scikit-learn=={pkg_version('scikit-learn')}",
                f"pandas=={pkg_version('pandas')}",
            ],
            skops_trusted_types=_trusted_types(pipe),
        )
    version = str(info.registered_model_version)
    lineage = {
        "airloop.run_id": run.info.run_id,
        "airloop.train_window": f"{dates[0]}..{dates[-1]}",
        "airloop.raw_partitions": ",".join(str(lake.partition(settings, lake.RAW, d)) for d in dates),
        "airloop.feature_service": spec.feature_service_name,
    }
    for key, value in lineage.items():
        c.set_model_version_tag(settings.registered_model, version, key, value)
    c.set_registered_model_alias(settings.registered_model, CHALLENGER, version)
    return {
        "run_id": run.info.run_id,
        "version": version,
        "model_uri": f"models:/{settings.registered_model}/{version}",
        "window": [dates[0], dates[-1]],
        "holdout_rows": len(holdout),
        "metrics": split_metrics,
    }


def _trusted_types(pipe: Any) -> list[str]:
    """Types skops must trust to reload our own freshly trained pipeline (stored in MLmodel)."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(pipe))
