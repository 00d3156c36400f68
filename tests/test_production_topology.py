"""Live production topology: the lifecycle over several days through PostgreSQL, Celery workers, MLflow server,
Redis and S3, driven through the REST API as an operator (or the scheduler) would; then a worker killed mid-task.

Starts everything itself, with passwords everywhere: a private PostgreSQL cluster (needs PostgreSQL's server
programs, ``apt-get install postgresql``), two ``redis-server`` processes (broker, online store), the S3 endpoint,
MLflow's basic-auth server and the Airflow components. A missing program fails the module when CI=true and skips it
elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from airloop import lake
from airloop.lake import DATA_FILE
from private_postgres import MISSING, server_bin
from production_topology import (
    AIRFLOW_DB,
    BROKER_DB,
    LANDING_BUCKET,
    MLFLOW_BUCKET,
    MLFLOW_DB,
    ONLINE_DB,
    OUTPUT_BUCKET,
    REDIS_HOST,
    running_a_task,
    start_topology,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

# day 3: first champion (cold start); day 4: bad batch; day 5: covariate shift -> one retrain; day 6: cool-down
START, DAYS = date(2026, 1, 1), 6
BAD_DAY, SHIFT_DAY, LAST_DAY = "2026-01-04", "2026-01-05", "2026-01-06"
DAILY, MONITOR, TRAIN = "airloop_daily", "airloop_monitor", "airloop_train"
# a shorter history than the embedded test: a 1-day holdout lets the first champion train on day 3
SHORT_HISTORY = {
    "AIRLOOP_HOLDOUT_DAYS": "1",
    "AIRLOOP_MIN_TRAIN_DAYS": "3",
    "AIRLOOP_RETRAIN_COOLDOWN_DAYS": "2",
    "AIRLOOP_ROWS_PER_DAY": "400",
    "AIRLOOP_CUSTOMERS": "2000",
    # four scoring shards a day, mapped over both workers
    "AIRLOOP_SCORE_SHARD_ROWS": "100",
    # one drifted check retrains here (the persistence rule is tested in test_monitor*.py); a 400-row
    # holdout judged without slices (~60 premium rows are too few; slices are tested in test_promote.py)
    "AIRLOOP_DRIFT_PERSIST_CHECKS": "1",
    "AIRLOOP_DRIFT_CURRENT_DAYS": "3",
    "AIRLOOP_DRIFT_SETTLE_DAYS": "1",
    # labels from the batch: the first champion on day 3 (the label feed's delay would move it a day later)
    "AIRLOOP_LABEL_SOURCE": "batch",
    "AIRLOOP_GATE_MIN_ROWS": "300",
    "AIRLOOP_GATE_RULES": '["floor", "min_rows", "non_inferiority", "budget", "validation"]',
    # the fault tests wait out two retries: 2 s then 4 s instead of 30 s then 60 s (the backoff is test_dags')
    "AIRLOOP_TASK_RETRY_DELAY_SECONDS": "2",
}


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    missing = [MISSING] if server_bin() is None else []
    if shutil.which("redis-server") is None:
        missing.append("redis-server is not installed: apt-get install redis-server")
    if missing:
        if os.environ.get("CI"):
            pytest.fail("; ".join(missing))
        pytest.skip("; ".join(missing))
    topo = start_topology(tmp_path_factory.mktemp("prod"), SHORT_HISTORY)
    yield topo
    topo.stop_all()


@pytest.fixture(scope="module")
def settings(topology):
    """airloop settings of the topology, for the test process to read what the workers wrote."""
    from airloop.config import get_settings

    with pytest.MonkeyPatch.context() as mp:
        for key, value in topology.env.items():
            if key.startswith(("AIRLOOP_", "AWS_", "MLFLOW_S3", "MLFLOW_TRACKING_")):  # the service account
                mp.setenv(key, value)
        yield get_settings()


@pytest.fixture(scope="module")
def lifecycle(topology, settings):
    """Simulate the days, put the batches on S3, then per day: daily → monitor → any triggered training."""
    import boto3

    from airloop.simulate import Scenario, simulate

    scenarios = [Scenario.parse(f"schema_break@{BAD_DAY}:{BAD_DAY}"), Scenario.parse(f"covariate_shift@{SHIFT_DAY}")]
    simulate(START, DAYS, settings, scenarios)
    s3 = boto3.client("s3")
    for path in sorted(settings.landing_dir.glob("ds=*/*.*")):  # the daily batches (labels stay on the volume)
        s3.upload_file(str(path), LANDING_BUCKET, f"landing/{path.parent.name}/{path.name}")
        path.unlink()  # the workers must read S3, not the local landing folder

    started = time.monotonic()
    topology.wait_dags([DAILY, MONITOR, TRAIN, "airloop_release"])
    log, seen_train = {}, set()
    for i in range(DAYS):
        ds = (START + timedelta(days=i)).isoformat()
        entry = {"ds": ds}
        for dag_id in (DAILY, MONITOR):
            run_id = topology.trigger(dag_id, ds, run_id=f"it__{ds}")
            entry[dag_id] = topology.wait_run(dag_id, run_id)
            entry[f"{dag_id}_run"] = run_id
        entry[TRAIN] = []
        for run in topology.runs(TRAIN):
            if run["dag_run_id"] not in seen_train:
                seen_train.add(run["dag_run_id"])
                state = topology.wait_run(TRAIN, run["dag_run_id"])
                entry[TRAIN].append({"run_id": run["dag_run_id"], "conf": run["conf"], "state": state})
        print(json.dumps(entry), flush=True)
        log[ds] = entry
    elapsed = time.monotonic() - started
    print(f"lifecycle: {DAYS} days in {elapsed:.0f} s on the production topology", flush=True)
    return log


def test_postgres_and_both_redis_servers_refuse_a_client_without_the_password(topology, monkeypatch):
    """The private cluster answers only with the password (TCP and its unix socket); the broker and the online
    store's Redis answer only with theirs; the profile's URLs carry them."""
    import psycopg2
    import redis

    monkeypatch.delenv("PGPASSWORD", raising=False)
    pg = topology.pg
    for attempt in ({"password": ""}, {"password": "not-the-password"}, {"host": str(pg.root), "password": ""}):
        with pytest.raises(psycopg2.OperationalError, match="no password supplied|password authentication failed"):
            pg.connect(AIRFLOW_DB, **attempt).close()
    assert pg.query(MLFLOW_DB, "SELECT current_user") == [("airflow",)]
    for port, db in ((topology.broker_redis_port, BROKER_DB), (topology.online_redis_port, ONLINE_DB)):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=REDIS_HOST, port=port, db=db).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=REDIS_HOST, port=port, db=db, password="not-the-password").ping()
        assert redis.Redis(host=REDIS_HOST, port=port, db=db, password=topology.redis_password).ping()
    env = topology.env
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert f"airflow:{pg.password}@127.0.0.1:{pg.port}/{AIRFLOW_DB}" in env[key], key
    assert env["AIRFLOW__CELERY__BROKER_URL"] == (
        f"redis://:{topology.redis_password}@{REDIS_HOST}:{topology.broker_redis_port}/{BROKER_DB}"
    )


def test_good_days_flow_from_s3_to_features(lifecycle, settings):
    for ds in ["2026-01-01", "2026-01-03", LAST_DAY]:
        assert lifecycle[ds][DAILY] == "success", lifecycle[ds]
        ingest = json.loads((lake.partition(settings, "raw", ds) / "_ingest.json").read_text())
        assert ingest["sources"] and all(
            s.startswith(f"s3://{LANDING_BUCKET}/landing/ds={ds}/") for s in ingest["sources"]
        )
        result = json.loads((lake.partition(settings, "validated", ds) / "validation.json").read_text())
        assert result["success"] is True and result["failed"] == []
        assert (lake.data_file(settings, "features", ds)).exists()


def test_bad_batch_is_quarantined_and_nothing_downstream_runs(lifecycle, settings, topology):
    assert lifecycle[BAD_DAY][DAILY] == "failed"
    assert "monthly_charges" in (lake.partition(settings, "quarantine", BAD_DAY) / "REASON.txt").read_text()
    assert not lake.partition(settings, "validated", BAD_DAY).exists()
    assert not lake.partition(settings, "predictions", BAD_DAY).exists()
    states = {t: ti["state"] for t, ti in topology.task_instances(DAILY, lifecycle[BAD_DAY][f"{DAILY}_run"]).items()}
    assert states["validate"] == "failed"
    assert states["materialize"] == states["score"] == "upstream_failed"


def test_online_store_on_redis_serves_a_known_entity(lifecycle, settings, topology):
    import redis

    from airloop.features import online_features

    online = redis.Redis(host=REDIS_HOST, port=topology.online_redis_port, db=ONLINE_DB)
    with pytest.raises(redis.AuthenticationError):  # the online store has a password (the production profile's)
        online.dbsize()
    password = topology.redis_password
    assert redis.Redis(host=REDIS_HOST, port=topology.online_redis_port, db=ONLINE_DB, password=password).dbsize() > 0
    batch = pd.read_parquet(lake.data_file(settings, "validated", LAST_DAY))
    row = batch.iloc[0]
    online = online_features(settings, [int(row["customer_id"])]).iloc[0]
    assert online["monthly_charges"] == pytest.approx(row["monthly_charges"])
    assert online["plan"] == row["plan"]


def test_champion_lives_in_the_mlflow_server_with_artifacts_on_s3(lifecycle, settings, topology):
    import boto3

    from airloop.registry import version_by_alias

    champion = version_by_alias(settings, "champion")
    assert champion is not None and champion.tags["airloop.gate.decision"] == "promoted"
    preds = pd.read_parquet(lake.data_file(settings, "predictions", LAST_DAY))
    assert set(preds["model_version"]) == {str(champion.version)}
    assert preds["score"].between(0, 1).all() and len(preds) == settings.rows_per_day
    # the registry is in PostgreSQL, the model files in the S3 bucket behind the server's artifact proxy
    assert (settings.registered_model,) in topology.query(MLFLOW_DB, "SELECT name FROM registered_models")
    keys = [
        o["Key"]
        for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=MLFLOW_BUCKET)
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("/MLmodel") for k in keys), keys[:20]
    assert any(k.endswith("model.skops") or k.endswith("model.pkl") for k in keys), keys[:20]


def test_an_anonymous_request_cannot_move_the_champion_alias(lifecycle, settings, topology):
    """The MLflow server runs its basic-auth app: moving ``champion`` without a user, or with a wrong password,
    gets 401 and changes nothing; the pipeline's service account (the workers' MLFLOW_TRACKING_USERNAME) reads."""
    import httpx

    from airloop.registry import client, version_by_alias

    champion = version_by_alias(settings, "champion").version  # read as the service account
    versions = client(settings).search_model_versions(f"name='{settings.registered_model}'")
    other = next(v.version for v in versions if v.version != champion)
    body = {"name": settings.registered_model, "alias": "champion", "version": str(other)}
    url = f"{topology.mlflow_url}/api/2.0/mlflow/registered-models/alias"
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    user = topology.env["MLFLOW_TRACKING_USERNAME"]
    assert httpx.post(url, json=body, auth=(user, "not-the-password"), timeout=30).status_code == 401
    assert version_by_alias(settings, "champion").version == champion
    got = httpx.get(
        f"{topology.mlflow_url}/api/2.0/mlflow/registered-models/get",
        params={"name": settings.registered_model},
        auth=(user, topology.mlflow_password),
        timeout=30,
    )
    assert got.status_code == 200 and user == "airloop"  # the admin of deploy/mlflow/basic_auth.ini


def test_drift_retrains_once_and_the_cooldown_holds(lifecycle, settings):
    from airloop.registry import client, version_by_alias
    from airloop.status import collect_status

    status = collect_status(settings)
    events = {e["ds"]: e for e in status["drift_events"]}
    assert events[SHIFT_DAY]["action"] == "retrain"
    assert all(ds >= SHIFT_DAY for ds in events), f"drift reported before the shift: {sorted(events)}"
    retrains = [r for r in status["retrains"] if r["trigger"] == "retrain"]
    assert [r["trigger_ds"] for r in retrains] == [SHIFT_DAY]
    assert [(t["conf"]["trigger"], t["state"]) for t in lifecycle[SHIFT_DAY][TRAIN]] == [("retrain", "success")]
    # the data is seeded, so the decision is pinned: the retrain (trained on the shift's first day) is not shown
    # to be non-inferior to the champion on the same rows (the CI of the difference straddles the margin), as
    # the version's own gate tags in the MLflow server say; the same champion still drifts, the cool-down holds
    mv = client(settings).get_model_version(settings.registered_model, retrains[0]["version"])
    assert retrains[0]["gate"] == "refused" and mv.tags["airloop.gate.failed_rules"] == "non_inferiority"
    ci = float(mv.tags["airloop.gate.ci_low"]), float(mv.tags["airloop.gate.ci_high"])
    assert ci[0] < -settings.promotion_tolerance < ci[1], ci
    assert str(version_by_alias(settings, "champion").version) == mv.tags["airloop.gate.champion_version"]
    assert events[LAST_DAY]["action"] == "cooldown" and not lifecycle[LAST_DAY][TRAIN]
    bootstraps = [t for e in lifecycle.values() for t in e[TRAIN] if t["conf"]["trigger"] == "bootstrap"]
    assert [t["state"] for t in bootstraps] == ["success"]


def test_tasks_ran_on_both_celery_workers(lifecycle, topology):
    workers = topology.worker_of_tasks()
    assert len(workers) >= 30, "celery_taskmeta should hold one row per executed task"
    names = {w.split("@")[0] for w in workers.values()}
    assert names == {"worker1", "worker2"}, names


def test_a_days_scoring_shards_ran_in_parallel_on_both_workers(lifecycle, settings, topology):
    """``score_shard`` is mapped over the day's shards; in one run they overlap in time on both workers."""
    from itertools import combinations

    runs: dict[str, list[tuple]] = {}
    for run_id, map_index, worker, start, end in topology.query(
        AIRFLOW_DB,
        "SELECT ti.run_id, ti.map_index, m.worker, ti.start_date, ti.end_date FROM task_instance ti "
        "JOIN celery_taskmeta m ON m.task_id = ti.external_executor_id "
        "WHERE ti.dag_id = %s AND ti.task_id = 'score_shard' AND ti.state = 'success'",
        (DAILY,),
    ):
        runs.setdefault(run_id, []).append((map_index, worker.split("@")[0], start, end))
    shards = settings.rows_per_day // 100
    assert runs and all(sorted(t[0] for t in tis) == list(range(shards)) for tis in runs.values()), runs
    parallel = {
        run_id
        for run_id, tis in runs.items()
        if any(a[1] != b[1] and a[2] < b[3] and b[2] < a[3] for a, b in combinations(tis, 2))
    }
    assert parallel, f"no run scored shards on both workers at once: {runs}"
    out = pd.read_parquet(lake.data_file(settings, "predictions", LAST_DAY))
    assert len(out) == settings.rows_per_day and not out.duplicated(["customer_id", "event_timestamp"]).any()
    assert not list((settings.lake_dir / "_staging").rglob("*.parquet")), "published parts are removed"


def test_predictions_are_published_to_the_output_bucket(lifecycle, settings):
    import io

    import boto3

    body = boto3.client("s3").get_object(Bucket=OUTPUT_BUCKET, Key=f"predictions/ds={LAST_DAY}/{DATA_FILE}")["Body"]
    exported = pd.read_parquet(io.BytesIO(body.read()))
    pd.testing.assert_frame_equal(exported, pd.read_parquet(lake.data_file(settings, "predictions", LAST_DAY)))


def test_no_secret_reaches_a_log(lifecycle, topology):
    """The admin's password (FAB users from the environment, never generated), the PostgreSQL, Redis and MLflow
    passwords and the other secrets are never logged."""
    secrets = [topology.password, topology.pg.password, topology.redis_password, topology.mlflow_password] + [
        topology.env[k] for k in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AWS_SECRET_ACCESS_KEY")
    ]
    logs = [*(topology.workdir / "logs").glob("*.log"), *Path(topology.env["AIRFLOW_HOME"]).rglob("*.log")]
    assert len(logs) > 20
    for path in logs:
        text = path.read_text(errors="replace")
        assert not any(s in text for s in secrets), f"a secret is written to {path}"
        assert "Password for user" not in text, f"{path}: the simple auth manager generated and logged a password"


def test_mlflow_server_down_during_training_retries_then_fails_clearly(lifecycle, topology, settings):
    """MLflow stopped: ``train`` is tried 1 + 2 retries, the run fails with the cause in the log, nothing is
    registered, and the champion stays. The server is started again afterwards."""
    from airloop.registry import client, version_by_alias

    champion_before = version_by_alias(settings, "champion").version
    versions_before = len(client(settings).search_model_versions(f"name='{settings.registered_model}'"))
    mlflow = topology.processes["mlflow"]
    mlflow.stop()
    try:
        run_id = topology.trigger(
            TRAIN, LAST_DAY, conf={"reason": "fault_mlflow", "is_backfill": True}, run_id="it__mlflow_down"
        )
        assert topology.wait_run(TRAIN, run_id, timeout=900) == "failed"
        tis = topology.task_instances(TRAIN, run_id)
        assert tis["train"]["state"] == "failed" and tis["train"]["try_number"] == 3, tis["train"]
        assert tis["gate"]["state"] == "upstream_failed"
        log = (
            Path(topology.env["AIRFLOW_HOME"]) / f"logs/dag_id={TRAIN}/run_id={run_id}/task_id=train/attempt=3.log"
        ).read_text()
        port = topology.mlflow_url.rsplit(":", 1)[1]
        assert f"port={port}" in log and "Connection refused" in log, log[-2000:]
    finally:
        topology.restart("mlflow")
    c = client(settings)
    exp = c.get_experiment_by_name(settings.experiment_name)
    assert c.search_runs([exp.experiment_id], filter_string=f"tags.`airloop.airflow_run_id` = '{run_id}'") == []
    assert len(c.search_model_versions(f"name='{settings.registered_model}'")) == versions_before
    assert version_by_alias(settings, "champion").version == champion_before


def _online_state(r) -> dict:
    return {key: r.hgetall(key) if r.type(key) == b"hash" else r.dump(key) for key in r.scan_iter()}


def test_redis_down_during_materialization_retries_then_fails_and_the_online_store_is_intact(
    lifecycle, topology, settings
):
    """The online store's Redis stopped: the next day's offline ``materialize`` succeeds, each ``write_online``
    bucket is tried 1 + 2 times, the run fails with the cause in the log, ``score`` does not run, and after Redis
    is back every online value is as before."""
    import boto3
    import redis

    from airloop.simulate import simulate

    next_day = "2026-01-07"
    for path in simulate(date.fromisoformat(next_day), 1, settings):
        for file in sorted(path.glob("*.*")) if path.is_dir() else [path]:
            boto3.client("s3").upload_file(str(file), LANDING_BUCKET, f"landing/ds={next_day}/{file.name}")
    online = redis.Redis(
        host=REDIS_HOST, port=topology.online_redis_port, db=ONLINE_DB, password=topology.redis_password
    )
    before = _online_state(online)
    assert before
    topology.processes["redis-online"].stop()
    try:
        run_id = topology.trigger(DAILY, next_day, run_id="it__redis_down")
        assert topology.wait_run(DAILY, run_id, timeout=900) == "failed"
        tis = topology.task_instances(DAILY, run_id)
        assert tis["validate"]["state"] == tis["materialize"]["state"] == "success"
        writes = [
            ti
            for ti in topology.api("GET", f"/dags/{DAILY}/dagRuns/{run_id}/taskInstances")["task_instances"]
            if ti["task_id"] == "write_online"
        ]
        assert writes and all(ti["state"] == "failed" and ti["try_number"] == 3 for ti in writes), writes
        assert tis["score"]["state"] == "upstream_failed"
        log = (
            Path(topology.env["AIRFLOW_HOME"])
            / f"logs/dag_id={DAILY}/run_id={run_id}/task_id=write_online/map_index=0/attempt=3.log"
        ).read_text()
        assert str(topology.online_redis_port) in log and "Connection refused" in log, log[-2000:]
    finally:
        topology.restart("redis-online")
    assert _online_state(online) == before
    assert not lake.partition(settings, "predictions", next_day).exists()


def test_worker_killed_mid_task_is_retried_on_the_other_worker(lifecycle, topology, settings):
    """Runs last (it leaves one worker): SIGKILL the worker running ``train``; the task is retried on the other."""
    from airloop.registry import version_by_alias

    champion_before = version_by_alias(settings, "champion").version
    # its own logical date (one run per DAG and date); the data window still ends on LAST_DAY
    run_id = topology.trigger(
        TRAIN, "2026-01-07", conf={"reason": "fault_test", "end_date": LAST_DAY, "is_backfill": True}, run_id="it__kill"
    )
    deadline = time.monotonic() + 300
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "train never started"
        ti = topology.task_instances(TRAIN, run_id).get("train", {})
        if ti.get("state") == "running":
            busy = [p for n, p in topology.processes.items() if n.startswith("worker") and running_a_task(p.proc.pid)]
            if len(busy) == 1:
                victim = busy[0]
        time.sleep(0.5)
    time.sleep(3)  # well inside the task (imports, Feast retrieval)
    victim.kill_hard()
    survivor = "worker2" if victim.name == "worker1" else "worker1"

    assert topology.wait_run(TRAIN, run_id, timeout=600) == "success"
    tis = topology.task_instances(TRAIN, run_id)
    assert tis["train"]["try_number"] == 2, tis["train"]
    assert topology.worker_of_tasks(TRAIN)[(TRAIN, run_id, "train")].startswith(f"{survivor}@")
    # the retry's output is complete and correct: one finished MLflow run, one registered version with its
    # gate decision (not promoted: a backfill), nothing registered from the killed try, the champion untouched
    from airloop.registry import client

    assert tis["gate"]["state"] == "success"
    c = client(settings)
    exp = c.get_experiment_by_name(settings.experiment_name)
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`airloop.airflow_run_id` = '{run_id}'")
    finished = [r.info.run_id for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1, [(r.info.run_id, r.info.status) for r in runs]
    run_ids = {r.info.run_id for r in runs}
    versions = [v for v in c.search_model_versions(f"name='{settings.registered_model}'") if v.run_id in run_ids]
    assert [v.run_id for v in versions] == finished
    assert versions[0].tags["airloop.gate.decision"] == "refused"
    assert version_by_alias(settings, "champion").version == champion_before
