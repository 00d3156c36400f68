"""The monitor without Airflow: Evidently's verdicts on simulated data, delayed labels, the retraining policy."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from airloop.labels import arrived_labels, collect_labels
from airloop.policy import decide, drift_streak, reference_days, refused_in_a_row
from airloop.reports import drift_report, performance_report
from airloop.simulate import Scenario, simulate, simulate_day

START = date(2026, 1, 1)


def _days(settings, first: int, n: int, scenarios=()) -> pd.DataFrame:
    return pd.concat([simulate_day(START + timedelta(days=first + i), settings, scenarios) for i in range(n)])


def test_stable_days_do_not_drift_and_a_covariate_shift_does(settings):
    reference = _days(settings, 0, 4)
    _, stable = drift_report(settings, reference, _days(settings, 4, 2), summary=False)
    assert stable["dataset_drift"] is False and stable["drift_share"] < settings.drift_share_threshold
    assert not any(c["drifted"] for c in stable["columns"].values())
    shift = [Scenario.parse("covariate_shift@2026-01-05")]
    _, shifted = drift_report(settings, reference, _days(settings, 4, 2, shift))
    assert shifted["dataset_drift"] is True and shifted["drift_share"] >= settings.drift_share_threshold
    drifted = {name for name, c in shifted["columns"].items() if c["drifted"]}
    assert {"monthly_charges", "usage_hours_7d"} <= drifted and "region" not in drifted
    # Evidently chose its tests by sample size and column type: a distance for numbers and categories
    assert shifted["columns"]["monthly_charges"]["method"] == "Wasserstein distance (normed)"
    assert shifted["columns"]["plan"]["method"] == "Jensen-Shannon distance"


def test_drift_tests_are_configured_per_column_type_and_column(settings, monkeypatch):
    monkeypatch.setenv("AIRLOOP_DRIFT_NUM_METHOD", "ks")
    monkeypatch.setenv("AIRLOOP_DRIFT_NUM_THRESHOLD", "0.01")
    monkeypatch.setenv("AIRLOOP_DRIFT_COLUMN_METHODS", '{"plan": "psi"}')
    monkeypatch.setenv("AIRLOOP_DRIFT_SAMPLE_ROWS", "1000")
    from airloop.config import get_settings

    configured = get_settings()
    _, numbers = drift_report(configured, _days(configured, 0, 3), _days(configured, 3, 1), summary=False)
    charges = numbers["columns"]["monthly_charges"]
    assert charges["method"] == "ks" and charges["threshold"] == 0.01
    assert numbers["columns"]["plan"]["method"] == "psi"
    # not configured: Evidently's own choice, which for a reference of <= 1000 rows (the sample) is chi-square
    assert numbers["columns"]["region"]["method"] == "chi-square p_value"
    assert numbers["rows_reference"] == 1800 and numbers["sampled_rows"] == {"reference": 1000, "current": 600}
    monkeypatch.setenv("AIRLOOP_DRIFT_COLUMN_METHODS", '{"no_such_column": "psi"}')
    with pytest.raises(ValueError, match="no_such_column"):
        drift_report(get_settings(), _days(configured, 0, 1), _days(configured, 1, 1))


def test_labels_arrive_after_the_configured_delay(settings, monkeypatch):
    monkeypatch.setenv("AIRLOOP_LABEL_DELAY_DAYS", "2")
    from airloop.config import get_settings

    delayed = get_settings()
    simulate(START, 5, delayed)
    collect_labels(delayed, "2026-01-02")
    assert arrived_labels(delayed, "2026-01-02").empty  # day 1's labels arrive on day 3
    first = collect_labels(delayed, "2026-01-04")
    assert first["written"] == ["2026-01-03", "2026-01-04"]
    labels = arrived_labels(delayed, "2026-01-04")
    assert sorted(set(labels["label_ds"])) == ["2026-01-01", "2026-01-02"]
    batch = simulate_day(START, delayed)
    day1 = labels[labels["label_ds"] == "2026-01-01"]
    assert day1["churned"].tolist() == batch["churned"].tolist()  # the outcomes of that day's rows
    assert collect_labels(delayed, "2026-01-04")["written"] == ["2026-01-04"]  # idempotent: only today rewritten


def test_a_malformed_label_file_is_refused_and_nothing_is_written(settings):
    bad = settings.landing_dir / "labels" / "ds=2026-01-02" / "labels.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("customer_id,outcome\n1,0\n")
    with pytest.raises(ValueError, match=r"lacks columns \['event_timestamp', 'churned'\]"):
        collect_labels(settings, "2026-01-02")
    assert not (settings.lake_dir / "labels").exists()


def test_performance_report_measures_the_champion_with_evidently(settings):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    good = pd.DataFrame({"target": y, "prediction_value": np.clip(y * 0.6 + rng.random(2000) * 0.4, 0, 1)})
    noise = pd.DataFrame({"target": y, "prediction_value": rng.random(2000)})
    _, perf = performance_report(settings, good, noise)
    assert perf["roc_auc"] == pytest.approx(0.5, abs=0.05)
    assert {"accuracy", "precision", "recall", "f1", "log_loss"} <= set(perf)
    # and on good predictions: Evidently's numbers are scikit-learn's (a report stuck at 0.5 would fail)
    from sklearn.metrics import accuracy_score, roc_auc_score

    _, perf = performance_report(settings, noise, good)
    assert perf["roc_auc"] > 0.9
    assert perf["roc_auc"] == pytest.approx(roc_auc_score(y, good["prediction_value"]), abs=1e-9)
    assert perf["accuracy"] == pytest.approx(accuracy_score(y, good["prediction_value"] >= 0.5), abs=1e-9)


FACTS = {
    "ds": "2026-01-10",
    "drift_share": 0.1,
    "dataset_drift": False,
    "streak": 0,
    "performance": 0.8,
    "performance_days": ["2026-01-08", "2026-01-09"],
    "last_retrain": None,
    "new_labels": 1200,
    "active_training": 0,
}


@pytest.mark.parametrize(
    ("change", "action", "causes", "words"),
    [
        ({}, "none", [], "drift share 0.10 < threshold"),
        ({"dataset_drift": True, "drift_share": 0.4, "streak": 1}, "alert", [], "a retrain needs 2"),
        ({"dataset_drift": True, "drift_share": 0.4, "streak": 2}, "retrain", ["drift"], "2 consecutive checks"),
        ({"performance": 0.55}, "retrain", ["performance"], "roc_auc 0.550 on labelled days"),
        ({"performance": 0.55, "last_retrain": "2026-01-08"}, "cooldown", ["performance"], "3-day cool-down"),
        ({"performance": 0.55, "last_retrain": "2026-01-07"}, "retrain", ["performance"], "1200 new labelled"),
        ({"performance": 0.55, "active_training": 1}, "alert", ["performance"], "already queued or running"),
        ({"performance": 0.55, "new_labels": 150}, "alert", ["performance"], "only 150 labelled rows"),
        ({"performance": None, "drift_share": None}, "none", [], "nothing to compare"),
        # back-off: each refused retrain in a row doubles the cool-down, up to its bound
        ({"performance": 0.55, "last_retrain": "2026-01-07", "refused_in_a_row": 1}, "cooldown", ["performance"],
         "6-day cool-down (backed off after 1 refused"),
        ({"performance": 0.55, "last_retrain": "2026-01-04", "refused_in_a_row": 1}, "retrain", ["performance"],
         "1200 new labelled"),
        ({"performance": 0.55, "last_retrain": "2025-12-12", "refused_in_a_row": 5}, "cooldown", ["performance"],
         "30-day cool-down"),
        # a young regime: the drift retrain waits for a week of it; a performance cause does not wait
        ({"dataset_drift": True, "drift_share": 0.4, "streak": 2, "change_point": "2026-01-08", "settled_days": 3},
         "alert", ["drift"], "3 of 7 validated days"),
        ({"dataset_drift": True, "drift_share": 0.4, "streak": 2, "change_point": "2026-01-04", "settled_days": 7},
         "retrain", ["drift"], "2 consecutive checks"),
        ({"dataset_drift": True, "drift_share": 0.4, "streak": 2, "change_point": "2026-01-08", "settled_days": 3,
          "performance": 0.55}, "retrain", ["drift", "performance"], "roc_auc 0.550"),
    ],
)  # fmt: skip
def test_retraining_policy(settings, change, action, causes, words):
    got_action, reason, got_causes = decide(settings, {**FACTS, **change})
    assert (got_action, got_causes) == (action, causes)
    assert words in reason


def test_the_reference_starts_at_the_last_change_point_the_champion_learned(settings):
    window = [f"2026-01-{d:02d}" for d in range(1, 31)]
    assert reference_days(settings, window, []) == (window[-14:], None), "no change point: the window's end"
    past = [{"ds": "2026-01-23", "change_point": "2026-01-21"}, {"ds": "2026-01-24", "change_point": "2026-01-21"}]
    assert reference_days(settings, window, past) == (window[20:], "2026-01-21"), "only the regime it learned"
    assert reference_days(settings, window[:20], past) == (window[6:20], None), "a later change is not its own"


def test_back_off_counts_refused_retrains_since_the_last_promotion():
    runs = [
        {"trigger": "bootstrap", "gate": "promoted"},
        {"trigger": "retrain", "gate": "refused"},
        {"trigger": "retrain", "gate": "promoted"},
        {"trigger": "retrain", "gate": "refused"},
        {"trigger": "retrain", "gate": None},  # failed before registering: no evidence either way
        {"trigger": "manual", "gate": "promoted"},  # a person's run is not the policy's
        {"trigger": "retrain", "gate": "refused"},
    ]
    assert refused_in_a_row(runs) == 2
    assert refused_in_a_row(runs[:3]) == 0


def test_the_label_is_drift_tested_on_its_own_and_a_column_can_be_left_out(settings, monkeypatch, tmp_path):
    import yaml

    spec = yaml.safe_load(settings.spec_path.read_text())
    for f in spec["features"]:
        if f["name"] == "monthly_charges":
            f["drift"] = False
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("AIRLOOP_SPEC_PATH", str(path))
    monkeypatch.setenv("AIRLOOP_SUITE_DIR", str(settings.spec_path.parent / "expectations"))
    from airloop.config import get_settings

    s = get_settings()
    reference = _days(s, 0, 4)
    current = _days(s, 4, 2, [Scenario.parse("covariate_shift@2026-01-05")])
    _, numbers = drift_report(s, reference, current, summary=False)
    assert "monthly_charges" not in numbers["columns"] and "usage_hours_7d" in numbers["columns"]
    assert set(numbers["target_drift"]) == {"score", "method", "threshold", "drifted"}
    assert "churned" not in numbers["columns"], "the label is not counted in the share of drifted features"
    flipped = current.assign(churned=1)
    _, flipped_numbers = drift_report(s, reference, flipped, summary=False)
    assert flipped_numbers["target_drift"]["drifted"] is True
    _, unlabelled = drift_report(s, reference, current.drop(columns="churned"), summary=False)
    assert unlabelled["target_drift"] is None


def test_drift_must_persist_against_the_same_champion():
    past = [
        {"ds": "2026-01-05", "champion_version": "1", "dataset_drift": True},
        {"ds": "2026-01-06", "champion_version": "2", "dataset_drift": True},
        {"ds": "2026-01-07", "champion_version": "2", "dataset_drift": True},
    ]
    assert drift_streak(past, "2", drifted_now=True) == 3
    assert drift_streak(past, "3", drifted_now=True) == 1  # a new champion starts counting again
    assert drift_streak(past, "2", drifted_now=False) == 0
    assert drift_streak([*past, {"ds": "2026-01-08", "champion_version": "2", "dataset_drift": False}], "2", True) == 1


def test_reports_are_kept_as_snapshots_and_pruned_pages_render_again(settings, monkeypatch):
    import json

    from airloop import lake
    from airloop.monitor import _save_report, prune_html, render_reports

    monkeypatch.setenv("AIRLOOP_REPORT_HTML_DAYS", "2")
    from airloop.config import get_settings

    s = get_settings()
    snapshot, _ = drift_report(s, _days(s, 0, 1), _days(s, 1, 1))
    days = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    for ds in days:
        folder = lake.monitoring(s, ds)
        _save_report(s, snapshot, folder, "report")
        (folder / lake.RESULT_FILE).write_text(json.dumps({"ds": ds}))
    page = lake.monitoring(s, days[0]) / "report.html"
    kept = lake.monitoring(s, days[0]) / "report.json.gz"
    assert kept.stat().st_size * 20 < page.stat().st_size, "the snapshot is a small fraction of the page"
    gone = prune_html(s, days[-1])
    assert sorted(p.parent.name for p in gone) == ["ds=2026-01-01", "ds=2026-01-02"], "pages older than 2 days"
    assert kept.exists() and (lake.monitoring(s, days[-2]) / "report.html").exists()
    (again,) = render_reports(s, days[0])
    assert again == page and page.stat().st_size > 100_000 and "<html" in page.read_text()[:2000].lower()
    with pytest.raises(FileNotFoundError, match="no monitoring report for 2026-02-01"):
        render_reports(s, "2026-02-01")


def test_a_weekly_rhythm_is_not_drift_over_whole_weeks_but_a_short_window_sees_it(settings):
    """weekly_seasonality alone for 30 days, checked as the monitor does (reference: two whole weeks):
    no dataset drift in any 7-day window, while 3-day windows flag some weekends."""
    rhythm = [Scenario.parse("weekly_seasonality@2026-01-01")]
    days = {i: simulate_day(START + timedelta(days=i), settings, rhythm) for i in range(30)}
    reference = pd.concat([days[i] for i in range(14)])
    week = [drift_report(settings, reference, pd.concat([days[j] for j in range(i - 6, i + 1)]), summary=False)[1]
            for i in range(20, 30)]  # fmt: skip
    assert not any(n["dataset_drift"] for n in week), [round(n["drift_share"], 2) for n in week]
    short = [drift_report(settings, reference, pd.concat([days[j] for j in range(i - 2, i + 1)]), summary=False)[1]
             for i in range(20, 27)]  # fmt: skip
    assert any(n["dataset_drift"] for n in short), "the rhythm is strong enough that a 3-day window drifts"


def test_gradual_drift_grows_day_by_day(settings):
    creep = [Scenario.parse("gradual_drift@2026-01-15")]
    reference = _days(settings, 0, 7, creep)
    shares = [drift_report(settings, reference, _days(settings, first, 3, creep), summary=False)[1]["columns"]
              for first in (14, 24, 44)]  # fmt: skip
    charges = [c["monthly_charges"]["score"] for c in shares]
    assert charges[0] < charges[1] < charges[2], charges


def test_status_tells_each_drift_episode_with_its_answer_and_end():
    from airloop.status import drift_episodes

    checks = [
        {"ds": "2026-01-05", "dataset_drift": False},
        {"ds": "2026-01-06", "dataset_drift": True, "change_point": "2026-01-06"},
        {"ds": "2026-01-07", "dataset_drift": True, "change_point": "2026-01-06"},
        {"ds": "2026-01-08", "dataset_drift": None},  # no check possible that day: the episode goes on
        {"ds": "2026-01-09", "dataset_drift": False},
        {"ds": "2026-01-12", "dataset_drift": True, "change_point": "2026-01-11"},
    ]
    runs = [
        {"trigger": "bootstrap", "trigger_ds": "2026-01-04", "version": "1", "gate": "promoted"},
        {"trigger": "retrain", "trigger_ds": "2026-01-07", "version": "2", "gate": "promoted"},
    ]
    first, second = drift_episodes(checks, runs)
    assert first == {
        "change_point": "2026-01-06", "first_flagged": "2026-01-06", "last_flagged": "2026-01-07", "checks": 2,
        "resolved": "2026-01-09", "retrain": {"trigger_ds": "2026-01-07", "version": "2", "gate": "promoted"},
    }  # fmt: skip
    assert second["change_point"] == "2026-01-11" and second["resolved"] is None and second["retrain"] is None
