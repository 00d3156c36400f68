"""The default retraining policy over weeks: one lasting shift gives one retrain, then the loop settles.

Five weeks of simulated days run through the package's stages in plain Python (the DAGs' task bodies,
without Airflow's per-task overhead; tests/test_lifecycle_e2e.py covers the DAG wiring): ingest,
validate, materialize, score with the champion, collect labels, the monitor's check, and on its
``bootstrap`` / ``retrain`` the training run and the gate, as ``airloop_train`` does."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest

pytestmark = pytest.mark.slow

START = date(2026, 1, 1)
DAYS = 36  # the retrain comes a week after the shift; then two weeks against the new champion
SHIFT_DAY = "2026-01-16"


def _run_day(settings, ds: str) -> dict:
    from airloop.features import materialize_features
    from airloop.ingest import ingest_batch
    from airloop.labels import collect_labels
    from airloop.monitor import run_checks
    from airloop.policy import TRIGGER_ACTIONS, retrain_request
    from airloop.promote import evaluate_gate
    from airloop.score import NoChampion, plan_scoring, publish_scores, score_shard
    from airloop.train import train_model
    from airloop.validate import validate_batch

    ingest_batch(settings, ds)
    validate_batch(settings, ds)
    materialize_features(settings, ds)
    try:
        shards = [score_shard(settings, s) for s in plan_scoring(settings, ds)]
        publish_scores(settings, shards)
    except NoChampion:
        pass
    collect_labels(settings, ds)
    result = run_checks(settings, ds)
    if result["action"] in TRIGGER_ACTIONS:
        request = retrain_request(result)
        trigger = {**request, "ds": request["trigger_ds"]}
        trained = train_model(settings, request["end_date"], trigger=trigger)
        result["gate"] = evaluate_gate(settings, trained["version"])["decision"]
    return result


@pytest.fixture(scope="module")
def months(tmp_path_factory):
    from airloop.config import get_settings
    from airloop.simulate import Scenario, simulate

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(tmp_path_factory.mktemp("policy") / "airloop"))
        mp.setenv("AIRLOOP_ROWS_PER_DAY", "300")
        mp.setenv("AIRLOOP_MIN_NEW_LABELS", "600")
        mp.setenv("AIRLOOP_LABEL_SOURCE", "feed")  # the default (the test session pins batch)
        settings = get_settings()
        simulate(START, DAYS, settings, [Scenario.parse(f"covariate_shift@{SHIFT_DAY}")])
        days = [(START + timedelta(days=i)).isoformat() for i in range(DAYS)]
        yield settings, {ds: _run_day(settings, ds) for ds in days}


def test_one_lasting_shift_gives_one_retrain_and_then_the_drift_stops(months):
    settings, results = months
    from airloop.status import collect_status

    actions = {ds: r["action"] for ds, r in results.items()}
    print("\n".join(f"{ds} v{r.get('champion_version')} {r['action']}: {r['reason']}" for ds, r in results.items()))
    assert all(a in ("wait", "bootstrap", "none") for ds, a in actions.items() if ds < SHIFT_DAY), actions
    retrains = [ds for ds, a in actions.items() if a == "retrain"]
    assert len(retrains) == 1, f"one shift, one retrain: {actions}"
    retrain = results[retrains[0]]
    assert retrain["causes"] == ["drift"] and retrain["gate"] == "promoted", retrain["reason"]
    # the change point was found at the shift, and the retrain waited for a week of the new regime
    assert retrain["change_point"] == SHIFT_DAY
    assert retrain["policy"]["settled_days"] >= settings.drift_settle_days
    assert any("validated days of it so far" in r["reason"] for ds, r in results.items() if ds < retrains[0])
    # the new champion is compared with the regime it learned: no drift is reported against it
    later = [r for ds, r in results.items() if ds > retrains[0] and r.get("drift_share") is not None]
    assert later, "checks ran against the new champion"
    assert all(r["reference"][0] >= SHIFT_DAY for r in later), "its reference holds only the new regime"
    assert sum(bool(r["dataset_drift"]) for r in later) <= 1, [(r["ds"], r["drift_share"]) for r in later]
    assert all(r["action"] in ("none", "alert") for r in later)
    status = collect_status(settings)
    assert [r["trigger"] for r in status["retrains"]] == ["bootstrap", "retrain"]
    # status tells the episode's story: when it began, what answered it, when it was over
    (episode,) = status["drift_episodes"]
    assert episode["change_point"] == SHIFT_DAY and episode["last_flagged"] == retrains[0]
    assert episode["retrain"] == {"trigger_ds": retrains[0], "version": "2", "gate": "promoted"}
    assert episode["resolved"] == later[0]["ds"]


def test_prometheus_scrapes_the_run_and_every_dashboard_query_returns_data(months, tmp_path):
    """The same five weeks, plus a bad batch and a rollback, as Prometheus sees them: the textfiles the DAGs
    write (airloop.metrics) served by node-exporter's textfile collector, scraped by a real Prometheus on
    loopback with deploy/prometheus/prometheus.yml; the numbers match the state, and every PromQL expression of
    the Grafana dashboard runs through Prometheus' HTTP API and returns data (Airflow's StatsD panels: see below)."""
    import pandas as pd

    from airloop import lake
    from airloop.ingest import ingest_batch
    from airloop.metrics import write_textfiles
    from airloop.promote import rollback
    from airloop.quarantine import BatchQuarantined
    from airloop.simulate import Scenario, simulate
    from airloop.validate import validate_batch
    from metrics_stack import dashboard_queries, metric_names, node_exporter, prometheus, query, value, wait_for

    settings, results = months
    bad = (START + timedelta(days=DAYS)).isoformat()
    simulate(START + timedelta(days=DAYS), 1, settings, [Scenario.parse(f"schema_break@{bad}:{bad}")])
    ingest_batch(settings, bad)
    with pytest.raises(BatchQuarantined):
        validate_batch(settings, bad)
    rollback(settings, "metrics test: the retrained champion rolled back", actor="pytest")
    write_textfiles(settings)

    with node_exporter(settings.metrics_dir, tmp_path) as target, prometheus({"airloop": target}, tmp_path) as url:
        wait_for(url, "airloop_rows_landed", settings.metrics_days)
        # the last AIRLOOP_METRICS_DAYS days, each with the state's own numbers
        days = sorted({s["metric"]["ds"] for s in query(url, "airloop_rows_landed")})
        assert days == [(START + timedelta(days=i)).isoformat() for i in range(DAYS + 1)][-settings.metrics_days :]
        for ds in (days[0], days[-2]):
            rows = len(pd.read_parquet(lake.data_file(settings, lake.VALIDATED, ds)))
            assert value(url, f'airloop_rows_validated{{ds="{ds}"}}') == rows == settings.rows_per_day
        assert value(url, f'airloop_batch_quarantined{{ds="{bad}"}}') == 1 and not query(
            url, f'airloop_rows_validated{{ds="{bad}"}}'
        )
        failed = query(url, f'airloop_validation_failed_expectations{{ds="{bad}", severity="critical"}}')
        assert {s["metric"]["expectation"] for s in failed} >= {"expect_table_columns_to_match_set"}
        (retrain_ds,) = [ds for ds, r in results.items() if r["action"] == "retrain"]
        assert value(url, f'airloop_monitor_action{{ds="{retrain_ds}", action="retrain"}}') == 1
        assert value(url, f'airloop_dataset_drift{{ds="{retrain_ds}"}}') == 1
        assert value(url, f'airloop_drift_share{{ds="{retrain_ds}"}}') == pytest.approx(
            results[retrain_ds]["drift_share"]
        )
        after = max(ds for ds, r in results.items() if r.get("champion_version") == "2")
        assert query(url, f'airloop_predictions{{ds="{after}", model_version="2"}}')
        assert value(url, 'airloop_training_runs_total{trigger="retrain"}') == 1
        assert value(url, 'airloop_gate_decisions{decision="promoted"}') == 2
        assert value(url, "airloop_rollbacks_total") == 1 and value(url, "airloop_champion_version") == 1
        # the dashboard: every airloop_* expression returns data from this run; Airflow's (airflow_*, from
        # statsd-exporter) only run here: tests/test_metrics.py makes them return data from Airflow's StatsD
        time.sleep(2.5)  # a few scrapes, for the range functions (increase, changes)
        empty, airflow = [], []
        for title, expr in dashboard_queries():
            names = metric_names(expr)
            if names and all(n.startswith("airflow_") for n in names):
                airflow.append(expr)
                query(url, expr)  # Prometheus parses and runs it
            elif not query(url, expr):
                empty.append((title, expr))
        assert not empty, f"dashboard queries without data: {empty}"
        assert airflow, "the dashboard has Airflow panels"
