"""Training: time splits, full MLflow lineage, plots, reproducibility, hyperparameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from airloop import lake
from airloop.features import materialize_features
from airloop.ingest import ingest_batch
from airloop.registry import client
from airloop.simulate import simulate
from airloop.train import train_model
from airloop.validate import validate_batch

START, DAYS = date(2026, 1, 1), 5
END = (START + timedelta(days=DAYS - 1)).isoformat()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from airloop.config import get_settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(tmp_path_factory.mktemp("train") / "airloop"))
        s = get_settings()
        simulate(START, DAYS, s)
        for i in range(DAYS):
            ds = (START + timedelta(days=i)).isoformat()
            ingest_batch(s, ds)
            validate_batch(s, ds)
            materialize_features(s, ds)
        yield s


def test_run_logs_lineage_metrics_plots_and_tags(prepared):
    s = prepared
    out = train_model(s, END, trigger={"reason": "manual"})
    c = client(s)
    run = c.get_run(out["run_id"])
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert (p["train_start"], p["train_end"]) == ("2026-01-01", END)
    assert p["feature_service"] == "subscription_churn_v1" and p["features"].split(",") == s.spec.model_features
    for split in ("train", "validation", "holdout"):
        assert 0.5 < m[f"{split}_roc_auc"] <= 1.0 and m[f"rows_{split}"] > 0
    # time split: 2 training days, 1 validation day, 2 holdout days of 600 rows each
    assert (m["rows_train"], m["rows_validation"], m["rows_holdout"]) == (1200, 600, 1200)
    assert len(t["git_commit"]) == 40 and t["version.scikit-learn"]
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == f"train_2026-01-01_{END}"
    plots = {f.path for f in c.list_artifacts(out["run_id"], "plots")}
    assert plots == {
        f"plots/{n}.png" for n in ("roc_curve", "pr_curve", "calibration", "confusion_matrix", "feature_importance")
    }
    mv = c.get_model_version(s.registered_model, out["version"])
    assert mv.tags["airloop.run_id"] == out["run_id"]
    assert mv.tags["airloop.train_window"] == f"2026-01-01..{END}"
    assert mv.tags["airloop.raw_partitions"].split(",")[0].endswith("raw/ds=2026-01-01")
    from mlflow.models import get_model_info

    info = get_model_info(f"models:/{s.registered_model}/{out['version']}")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == s.spec.model_features


@pytest.mark.parametrize("model_type", ["logistic_regression", "hist_gradient_boosting"])
def test_same_window_and_seed_give_the_same_metrics(prepared, model_type):
    a = train_model(prepared, END, model_type=model_type)
    b = train_model(prepared, END, model_type=model_type)
    assert a["run_id"] != b["run_id"]
    assert a["metrics"] == b["metrics"]


def test_the_containerised_tasks_command_trains_like_the_task(prepared, monkeypatch):
    """The argv the containerised train task gives its container (rendered by the real operator, for a run without
    a logical date), run here for real but outside a container: the output is merged as Docker's log stream is, and
    its last line is the result the task returns."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRLOOP_CONTAINER_IMAGE", "airloop:0.1.0")
    dag = DagBag(dag_folder=str(Path(__file__).parents[1] / "dags" / "airloop_train.py")).dags["airloop_train"]
    train = dag.get_task("train")
    params = {**dag.params.dump(), "reason": "drift", "trigger_ds": END, "hyperparameters": {"C": 0.5}}
    train.render_template_fields({"params": params, "run_id": "retrain__x"})
    argv = [str(Path(sys.executable).with_name("airloop")), *train.command[1:]]
    env = {**os.environ, "AIRLOOP_HOME": str(prepared.home), "PYTHONUNBUFFERED": "1"}  # as in the image
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    c = client(prepared)
    run = c.get_run(result["run_id"])
    assert run.data.params["train_end"] == END and run.data.params["hp_C"] == "0.5"  # no ds: latest validated day
    t = run.data.tags
    assert (t["airloop.trigger_reason"], t["airloop.trigger_ds"], t["airloop.airflow_run_id"]) == (
        "drift",
        END,
        "retrain__x",
    )
    assert str(c.get_model_version_by_alias(prepared.registered_model, "challenger").version) == str(result["version"])


def test_hyperparameters_are_applied_and_unknown_ones_refused(prepared):
    out = train_model(prepared, END, params={"C": 0.01})
    assert client(prepared).get_run(out["run_id"]).data.params["hp_C"] == "0.01"
    with pytest.raises(ValueError, match="bad hyperparameters"):
        train_model(prepared, END, params={"depth": 3})


def test_skew_check_passes_on_consistent_features_and_fails_on_torn_online_state(prepared):
    import shutil

    import pandas as pd

    from airloop.features import get_store
    from airloop.promote import evaluate_gate
    from airloop.score import TrainingServingSkew, score_batch

    s = prepared
    assert evaluate_gate(s, train_model(s, END)["version"])["decision"] == "promoted"
    ok = score_batch(s, END)
    report = (lake.skew_report(s, END)).read_text()
    assert '"mismatches": []' in report and ok["rows"] == s.rows_per_day

    batch = pd.read_parquet(lake.data_file(s, "features", END))
    victim = batch.sort_values("customer_id").head(5).copy()
    victim["monthly_charges"] = victim["monthly_charges"] + 100.0  # the online store now disagrees
    get_store(s).write_to_online_store(
        s.spec.feature_view_name, victim[["customer_id", "event_timestamp", *s.spec.model_features]]
    )
    shutil.rmtree(lake.partition(s, "predictions", END))
    monkey = pytest.MonkeyPatch()
    monkey.setenv("AIRLOOP_SKEW_SAMPLE", "1000")  # sample every entity so the 5 victims are seen
    try:
        from airloop.config import get_settings

        with pytest.raises(TrainingServingSkew, match="5 mismatching values") as err:
            score_batch(get_settings(), END)
    finally:
        monkey.undo()
    assert "monthly_charges" in str(err.value)
    assert not lake.partition(s, "predictions", END).exists(), "a skewed run writes no predictions"
    # the day's report (monitoring/skew/ds=D.json) names each mismatch: entity, feature, both values
    path = lake.skew_report(s, END)
    assert path == s.monitoring_dir / "skew" / f"ds={END}.json" and str(path) in str(err.value)
    skewed = json.loads(path.read_text())
    assert skewed["ds"] == END and f"in {skewed['sampled']} sampled entities" in str(err.value)
    assert [m["feature"] for m in skewed["mismatches"]] == ["monthly_charges"] * 5
    got = {str(m["entity"]): (m["offline"], m["online"]) for m in skewed["mismatches"]}
    assert got == {
        str(r.customer_id): pytest.approx((r.monthly_charges - 100.0, r.monthly_charges)) for r in victim.itertuples()
    }


def test_a_day_scored_in_shards_equals_the_day_scored_whole(prepared):
    """The daily DAG maps one task per shard; any order of shards and a retried shard give the same day."""
    import pandas as pd

    from airloop.score import plan_scoring, publish_scores, score_batch, score_shard

    s = prepared  # a champion exists (promoted above)
    ds = (START + timedelta(days=DAYS - 2)).isoformat()  # not the newest day: no online-store probe
    whole = score_batch(s, ds)
    expected = pd.read_parquet(lake.data_file(s, "predictions", ds))
    assert whole["shards"] == 1 and len(expected) == s.rows_per_day

    small = s.model_copy(update={"score_shard_rows": 100})
    materialize_features(small, ds)  # the same rows, in row groups of 100
    shards = plan_scoring(small, ds)
    assert [len(sh["row_groups"]) for sh in shards] == [1] * (s.rows_per_day // 100)
    parts = [score_shard(small, sh) for sh in reversed(shards)]
    score_shard(small, shards[2])  # a retry rewrites its part
    out = publish_scores(small, parts)
    assert (out["shards"], out["rows"], out["model_version"]) == (len(shards), s.rows_per_day, whole["model_version"])
    pd.testing.assert_frame_equal(pd.read_parquet(lake.data_file(s, "predictions", ds)), expected)
    assert not list((s.lake_dir / "_staging").rglob("*.parquet")), "published parts are removed"


def test_on_the_label_feed_a_model_learns_only_the_labels_that_had_arrived(prepared, monkeypatch):
    from airloop.config import get_settings
    from airloop.labels import collect_labels
    from airloop.registry import training_runs

    monkeypatch.setenv("AIRLOOP_LABEL_SOURCE", "feed")
    monkeypatch.setenv("AIRLOOP_MIN_TRAIN_DAYS", "3")
    monkeypatch.setenv("AIRLOOP_HOLDOUT_DAYS", "1")
    monkeypatch.setenv("AIRLOOP_VALIDATION_DAYS", "1")
    s = get_settings()
    with pytest.raises(ValueError, match=r"only 0 labelled validated days \(5 validated\)"):
        train_model(s, END)  # nothing collected yet: no label is known
    collect_labels(s, END)  # the labels of day D arrive on D + 1 (label_delay_days): days 1..4 by day 5
    out = train_model(s, END)
    run = client(s).get_run(out["run_id"])
    day4 = (START + timedelta(days=DAYS - 2)).isoformat()
    assert (run.data.params["train_start"], run.data.params["train_end"]) == (START.isoformat(), day4)
    assert run.data.params["label_source"] == "feed" and run.data.params["requested_end"] == END
    # a retrain of an earlier day is the same run again: it sees only what had arrived by then
    day3 = (START + timedelta(days=2)).isoformat()
    with pytest.raises(ValueError, match="only 2 labelled validated days"):
        train_model(s, day3)
    assert [r["window"] for r in training_runs(s)][-1] == [START.isoformat(), day4]


def test_batches_without_a_label_column_validate_and_train_from_the_label_feed(tmp_path, monkeypatch):
    """``label_in_batch: false``: daily files without the label column pass the suite, and the model learns
    from the label feed alone; the batch label source is refused at load for such a spec."""
    import pandas as pd
    import yaml

    from airloop.config import PACKAGE_DIR, Settings, get_settings
    from airloop.labels import collect_labels
    from airloop.validate import write_suite

    spec = yaml.safe_load((PACKAGE_DIR / "dataset.yaml").read_text()) | {"label_in_batch": False}
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "dataset.yaml").write_text(yaml.safe_dump(spec))
    for key, value in {
        "AIRLOOP_HOME": str(tmp_path / "home"),
        "AIRLOOP_SPEC_PATH": str(tmp_path / "spec" / "dataset.yaml"),
        "AIRLOOP_MIN_TRAIN_DAYS": "3",
        "AIRLOOP_HOLDOUT_DAYS": "1",
        "AIRLOOP_VALIDATION_DAYS": "1",
        "AIRLOOP_LABEL_SOURCE": "feed",  # the tests' default is batch
    }.items():
        monkeypatch.setenv(key, value)
    s = get_settings()
    write_suite(s)
    label = s.spec.label
    for path in simulate(START, DAYS, s):  # the simulator's batches, their label column taken out
        pd.read_csv(path).drop(columns=[label]).to_csv(path, index=False)
    for i in range(DAYS):
        ds = (START + timedelta(days=i)).isoformat()
        ingest_batch(s, ds)
        result = validate_batch(s, ds)
        assert result["success"], result
        assert label not in pd.read_parquet(lake.data_file(s, lake.VALIDATED, ds)).columns
        materialize_features(s, ds)
    collect_labels(s, END)
    out = train_model(s, END)
    run = client(s).get_run(out["run_id"])
    assert run.data.params["label_source"] == "feed" and run.data.metrics["rows_train"] > 0
    with pytest.raises(ValueError, match="label_in_batch: false"):
        Settings(label_source="batch", spec_path=tmp_path / "spec" / "dataset.yaml")
