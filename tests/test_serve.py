"""The real-time scoring service (issue 19), live: `airloop serve` in a subprocess on loopback, its online
store a private redis-server filled by the real pipeline (ingest, validate, materialize, train, gate)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.filterwarnings("ignore")

AIRLOOP = str(Path(sys.executable).with_name("airloop"))
START = date(2026, 1, 1)
DAY = [(START + timedelta(days=i)).isoformat() for i in range(6)]
TOKEN = "test-token-19"
REFRESH_S = 1.0


def test_serve_needs_a_token_unless_disabled_on_purpose(settings, monkeypatch, caplog):
    from airloop.config import get_settings
    from airloop.serve import create_app

    with pytest.raises(ValueError, match="AIRLOOP_SERVE_TOKEN"):
        create_app(settings)
    monkeypatch.setenv("AIRLOOP_SERVE_AUTH", "false")
    with caplog.at_level("WARNING", logger="airloop.serve"):
        assert create_app(get_settings()).title == "airloop scoring service"
    assert "AIRLOOP_SERVE_AUTH=false: /predict answers anyone who can reach 127.0.0.1" in caplog.text
    out = subprocess.run([AIRLOOP, "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--workers" in out.stdout and "--json" in out.stdout


def test_the_prediction_log_keeps_the_newest_rows_while_the_lake_is_unwritable(settings, monkeypatch):
    """AIRLOOP_SERVE_LOG_MAX_BUFFER: a flush that cannot write keeps its rows for the next one; past the bound the
    oldest are dropped and counted (the ``airloop_serve_log_dropped`` gauge); the lake back, the rest is written."""
    from datetime import UTC, datetime

    from airloop import lake
    from airloop.config import get_settings
    from airloop.serve import PredictionLog

    monkeypatch.setenv("AIRLOOP_SERVE_LOG_MAX_BUFFER", "3")
    s = get_settings()
    now = datetime(2026, 1, 6, 12, tzinfo=UTC)

    def rows(*ids: int) -> list[tuple]:
        return [(i, now, now, "2026-01-06", 0.5, 1, "m", "1", "run", f"req-{i}") for i in ids]

    buffer = PredictionLog(s)
    zone = lake.partition(s, lake.ONLINE, "2026-01-06").parent
    zone.parent.mkdir(parents=True, exist_ok=True)
    zone.write_text("not a folder: the lake is unwritable")
    buffer.append(rows(1, 2))
    with pytest.raises(OSError):
        buffer.flush()
    buffer.append(rows(3, 4))
    assert buffer.dropped == 1
    zone.unlink()
    (part,) = buffer.flush()
    assert pd.read_parquet(part)[s.spec.entity].tolist() == [2, 3, 4] and buffer.flush() == []


def test_schemas_come_from_the_spec(settings):
    from airloop.serve import build_schemas

    request, result, response = build_schemas(settings)
    spec = settings.spec
    assert request.__name__ == "SubscriptionChurnPredictRequest" and spec.entity in request.model_fields
    features = result.model_fields["features"].annotation.__args__[0]
    assert list(features.model_fields) == spec.model_features
    assert request.model_validate({spec.entity: [1, 2]}) and request.model_validate({spec.entity: 3})
    with pytest.raises(ValueError, match="tenure_months"):  # no request-time features in this spec
        request.model_validate({spec.entity: [1], "tenure_months": 3})
    assert "predictions" in response.model_fields


# --- live --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A private redis-server (append-only file, so a stop/start keeps the data)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port, self.proc = folder, _free_port(), None

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        self.proc = subprocess.Popen([*cmd, "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start on {self.port}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _call(url: str, body: dict | None = None, token: str | None = TOKEN, timeout: float = 30) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Six simulated days through the real pipeline into a private Redis, champion v1 (gate) with its batch
    scores of the last day, a challenger v2; then `airloop serve` on a free port, ready."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from airloop.config import get_settings
    from airloop.features import materialize_features
    from airloop.ingest import ingest_batch
    from airloop.promote import evaluate_gate
    from airloop.score import score_batch
    from airloop.simulate import simulate
    from airloop.train import train_model
    from airloop.validate import validate_batch

    tmp = tmp_path_factory.mktemp("serve")
    redis = Redis(tmp)
    redis.start()
    port = _free_port()
    with pytest.MonkeyPatch.context() as mp:
        env = {
            "AIRLOOP_HOME": str(tmp / "airloop"),
            "AIRLOOP_ONLINE_STORE": "redis",
            "AIRLOOP_REDIS_CONNECTION": f"127.0.0.1:{redis.port}",
            "AIRLOOP_SERVE_TOKEN": TOKEN,
            "AIRLOOP_SERVE_REFRESH_SECONDS": str(REFRESH_S),
            "AIRLOOP_SERVE_LOG_FLUSH_SECONDS": "0.5",
            "AIRLOOP_GATE_BOOTSTRAP": "200",
        }
        for key, value in env.items():
            mp.setenv(key, value)
        s = get_settings()
        simulate(START, len(DAY), s)
        for ds in DAY:
            ingest_batch(s, ds)
            validate_batch(s, ds)
            materialize_features(s, ds)
        v1 = train_model(s, DAY[-1])["version"]
        if evaluate_gate(s, v1)["decision"] != "promoted":
            evaluate_gate(s, v1, force_reason="test_serve: a first champion", actor="test")
        batch = pd.read_parquet(score_batch(s, DAY[-1])["path"])
        v2 = train_model(s, DAY[-1], model_type="hist_gradient_boosting", params={"max_iter": 20})["version"]
        log = open(tmp / "serve.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [AIRLOOP, "serve", "--port", str(port)],
            # a fresh SQLite connection per registry query, so the registry test below can take the file away
            env={**os.environ, **env, "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp / "serve.log").read_text()
            try:
                if _call(f"{url}/ready", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"service not ready in 180 s: {(tmp / 'serve.log').read_text()[-3000:]}")
        yield {"url": url, "settings": s, "v1": v1, "v2": v2, "batch": batch, "redis": redis, "proc": proc}
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        redis.stop()


def test_predictions_equal_the_batch_scorer_and_are_logged(live):
    s, batch = live["settings"], live["batch"]
    spec = s.spec
    latest = batch.sort_values(spec.timestamp).drop_duplicates(spec.entity, keep="last").head(60)
    ids = latest[spec.entity].astype(int).tolist()
    status, body = _call(f"{live['url']}/predict", {spec.entity: ids})
    assert status == 200, body
    assert body["model_version"] == live["v1"] and len(body["predictions"]) == len(ids)
    got = pd.DataFrame(body["predictions"])
    both = latest.merge(got, on=spec.entity, suffixes=("_batch", "_online"))
    assert len(both) == len(ids) and both["error"].isna().all()
    assert (pd.to_datetime(both["feature_timestamp"], utc=True) == both[spec.timestamp]).all()
    assert both["score_online"].tolist() == pytest.approx(both["score_batch"].tolist(), rel=1e-9, abs=1e-12)
    assert (both["prediction_online"] == both["prediction_batch"]).all()
    assert (both["model_version_online"] == both["model_version_batch"]).all()
    # the predictions_online zone: whole part files only, the rows of this request among them
    zone = s.lake_dir / "predictions_online"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logged = pd.read_parquet(zone) if zone.exists() else pd.DataFrame()
        if len(logged) and set(ids) <= set(logged[spec.entity]):
            break
        time.sleep(0.25)
    assert not list(zone.rglob(".*.tmp")) and all(p.name.startswith("part-") for p in zone.rglob("*.parquet"))
    row = logged[logged[spec.entity] == ids[0]].iloc[-1]
    assert row["model_version"] == live["v1"] and row["score"] == pytest.approx(both["score_online"].iloc[0])
    assert str(row["ds"]).startswith("20")


def test_auth_validation_and_unknown_entities(live):
    url, entity = live["url"], live["settings"].spec.entity
    assert _call(f"{url}/predict", {entity: [1001]}, token=None)[0] == 401
    assert _call(f"{url}/predict", {entity: [1001]}, token="wrong")[0] == 401
    status, body = _call(f"{url}/predict", {entity: "abc"})
    assert status == 422 and all(e["loc"][:2] == ["body", entity] for e in body["detail"])
    status, body = _call(f"{url}/predict", {"customers": [1]})
    assert status == 422 and {tuple(e["loc"]) for e in body["detail"]} == {("body", entity), ("body", "customers")}
    status, body = _call(f"{url}/predict", {entity: [], "return_features": True})
    assert status == 422 and body["detail"][0]["loc"][:2] == ["body", entity]
    known = int(live["batch"][entity].iloc[0])
    status, body = _call(f"{url}/predict", {entity: [known, 987654321], "return_features": True})
    assert status == 200
    ok, missing = body["predictions"]
    assert ok["error"] is None and ok["score"] is not None
    assert ok["features"]["plan"] in settings_categories(live, "plan")
    assert missing == {
        entity: 987654321,
        "score": None,
        "prediction": None,
        "model_version": None,
        "feature_timestamp": None,
        "features_stale": False,
        "error": f"{entity} 987654321 has no features in the online store",
        "features": None,
    }
    assert _call(f"{url}/health", token=None) == (200, {"status": "ok"})
    schema = _call(f"{url}/openapi.json", token=None)[1]
    assert "SubscriptionChurnPredictRequest" in schema["components"]["schemas"]
    with urllib.request.urlopen(f"{url}/docs", timeout=10) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'airloop_serve_requests_total{path="/predict",status="401"}' in metrics
    assert 'airloop_serve_request_seconds_bucket{le="0.01",path="/predict"}' in metrics
    assert 'airloop_serve_errors_total{kind="auth"}' in metrics
    assert f"airloop_serve_model_version {float(live['v1'])}" in metrics


@pytest.mark.slow
def test_a_promotion_under_load_fails_no_request_and_is_served_within_the_bound(live):
    from airloop.promote import evaluate_gate

    s, url, entity = live["settings"], live["url"], live["settings"].spec.entity
    ids = live["batch"][entity].astype(int).head(5).tolist()
    results: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                status, body = _call(f"{url}/predict", {entity: ids})
                versions = {p["model_version"] for p in body["predictions"]} if status == 200 else set()
                version = body["model_version"] if status == 200 and versions == {body["model_version"]} else None
            except OSError as exc:
                status, version = -1, repr(exc)
            results.append((t, status, version))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(2)
    promoted_at = time.monotonic()
    evaluate_gate(s, live["v2"], force_reason="test_serve: promotion under load", actor="test")
    done_at = time.monotonic()
    bound = REFRESH_S + 10  # the refresh interval, plus loading the new model on a busy 2-core machine
    time.sleep(bound + 2)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert results and all(status == 200 for _, status, _ in results), [r for r in results if r[1] != 200][:5]
    assert {v for _, _, v in results} == {live["v1"], live["v2"]}
    late = [v for t, _, v in results if t > done_at + bound]
    assert late and set(late) == {live["v2"]}
    first_new = min(t for t, _, v in results if v == live["v2"])
    assert first_new - promoted_at < bound
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        assert f"airloop_serve_model_version {float(live['v2'])}" in resp.read().decode()


@pytest.mark.slow
def test_redis_down_is_a_prompt_503_and_serving_resumes_when_it_is_back(live):
    url, entity, redis = live["url"], live["settings"].spec.entity, live["redis"]
    ids = live["batch"][entity].astype(int).head(3).tolist()
    before = _call(f"{url}/predict", {entity: ids})
    assert before[0] == 200
    redis.stop()
    try:
        t = time.monotonic()
        status, body = _call(f"{url}/predict", {entity: ids}, timeout=10)
        assert status == 503 and body["detail"].startswith(f"online store unreachable (redis 127.0.0.1:{redis.port})")
        assert time.monotonic() - t < 5
        status, body = _call(f"{url}/ready", token=None, timeout=10)
        assert status == 503 and "online store unreachable" in body["detail"]
        assert _call(f"{url}/health", token=None)[0] == 200
    finally:
        redis.start()
    deadline = time.monotonic() + 20
    while _call(f"{url}/ready", token=None)[0] != 200:
        assert time.monotonic() < deadline, "service did not become ready after Redis came back"
        time.sleep(0.25)
    after = _call(f"{url}/predict", {entity: ids})
    assert after[0] == 200 and [p["score"] for p in after[1]["predictions"]] == [
        p["score"] for p in before[1]["predictions"]
    ]
    assert live["proc"].poll() is None  # the same process: no restart


def _refresh_errors(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(r'^airloop_serve_errors_total\{kind="refresh"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_it_binds_loopback_and_keeps_serving_when_the_registry_stops_answering(live):
    """`airloop serve` without --host listens on 127.0.0.1 only. The registry's SQLite file replaced by a folder
    (MLflow cannot open it): each refresh of the alias fails and is counted in /metrics, while /predict and
    /ready keep answering with the version already loaded; the file back, the refreshes succeed again."""
    import psutil

    listening = [
        c.laddr for c in psutil.Process(live["proc"].pid).net_connections("inet") if c.status == psutil.CONN_LISTEN
    ]
    assert [tuple(a) for a in listening] == [("127.0.0.1", int(live["url"].rsplit(":", 1)[1]))]

    s, url, entity = live["settings"], live["url"], live["settings"].spec.entity
    ids = live["batch"][entity].astype(int).head(3).tolist()
    status, before = _call(f"{url}/predict", {entity: ids})
    assert status == 200
    errors = _refresh_errors(url)
    db = s.home / "mlflow" / "mlflow.db"
    aside = db.with_name("mlflow.db.aside")
    db.rename(aside)
    db.mkdir()
    try:
        deadline = time.monotonic() + 30
        while _refresh_errors(url) < errors + 2:
            assert time.monotonic() < deadline, "the alias watcher did not count its failures"
            time.sleep(REFRESH_S / 2)
        status, during = _call(f"{url}/predict", {entity: ids})
        assert status == 200 and during["model_version"] == before["model_version"]
        assert [p["score"] for p in during["predictions"]] == [p["score"] for p in before["predictions"]]
        assert _call(f"{url}/ready", token=None)[0] == 200
    finally:
        db.rmdir()
        aside.rename(db)
    time.sleep(2 * REFRESH_S)  # a refresh that was failing when the file came back has finished
    settled = _refresh_errors(url)
    time.sleep(3 * REFRESH_S)
    assert _refresh_errors(url) == settled, "refreshes fail again after the registry came back"
    assert live["proc"].poll() is None


def settings_categories(live: dict, name: str) -> list[str]:
    return next(f.categories for f in live["settings"].spec.features if f.name == name)
