"""The scoring service's fast paths against their references, on a private redis-server filled by the real
pipeline stages (ingest, validate, materialize): ``online_read`` against Feast's ``get_online_features``, and
``serve.fast_scorer`` against the batch scorer (``score.score_shard``) for every model type of each task."""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from airloop.config import PACKAGE_DIR

pytestmark = pytest.mark.filterwarnings("ignore")

OLD_DAY = date(2026, 1, 1)  # the feature view's TTL (30 days) is long past: Feast still returns these values
SPECS = {"subscription_churn": None, "store_demand": PACKAGE_DIR / "specs" / "store_demand.yaml"}


@pytest.fixture(scope="module", params=sorted(SPECS))
def filled(request, tmp_path_factory):
    """One spec's online store: an old day, then a recent one (entities of the old day only are past the TTL)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    from test_serve import Redis

    from airloop.config import get_settings
    from airloop.features import get_store, materialize_features
    from airloop.ingest import ingest_batch
    from airloop.simulate import simulate
    from airloop.validate import validate_batch

    tmp = tmp_path_factory.mktemp(request.param)
    redis = Redis(tmp)
    redis.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(tmp / "airloop"))
        mp.setenv("AIRLOOP_ONLINE_STORE", "redis")
        mp.setenv("AIRLOOP_REDIS_CONNECTION", f"127.0.0.1:{redis.port}")
        mp.setenv("AIRLOOP_CUSTOMERS", "400")
        mp.setenv("AIRLOOP_ROWS_PER_DAY", "200")
        if SPECS[request.param]:
            mp.setenv("AIRLOOP_SPEC_PATH", str(SPECS[request.param]))
        s = get_settings()
        days = [OLD_DAY, date.today() - timedelta(days=2)]
        for day in days:
            simulate(day, 1, s)
            ingest_batch(s, day.isoformat())
            validate_batch(s, day.isoformat())
            materialize_features(s, day.isoformat())
        store = get_store(s)
        yield {"settings": s, "store": store, "days": [d.isoformat() for d in days], "redis": redis}
        redis.stop()


def _features(s, ds: str) -> pd.DataFrame:
    from airloop import lake

    return pd.read_parquet(lake.data_file(s, lake.FEATURES, ds))


def test_redis_reader_returns_what_feast_returns(filled):
    from airloop.online_read import redis_reader

    s, store = filled["settings"], filled["store"]
    spec = s.spec
    service = store.get_feature_service(spec.feature_service_name)
    reader, why = redis_reader(store, service)
    assert reader is not None, why
    old, new = (_features(s, ds) for ds in filled["days"])
    stale = sorted(set(old[spec.entity]) - set(new[spec.entity]))[:40]
    fresh = new[spec.entity].tolist()[:40]
    assert stale and fresh
    ids = [int(i) for i in stale + fresh] + [-1, 10**12] + [int(fresh[0])] * 2  # unknown ids, repeats
    want = store.get_online_features(features=service, entity_rows={spec.entity: ids})
    got = reader.read(ids)
    assert got == want.to_dict(include_event_timestamps=True)
    ttl = s.feature_ttl_days * 86_400
    now = pd.Timestamp.now("UTC").timestamp()
    stamps = got[f"{spec.model_features[0]}__ts"]
    known = range(len(stale) + len(fresh))
    assert all(now - stamps[i] > ttl for i in range(len(stale)))  # past the TTL, returned all the same
    assert all(now - stamps[i] < ttl for i in range(len(stale), len(known)))
    assert all(any(got[f][i] is not None for f in spec.model_features) for i in known)
    assert stamps[-4:-2] == [0, 0] and all(got[f][-3] is None for f in spec.model_features)  # unknown ids


def test_redis_reader_falls_back_where_it_does_not_cover_the_store(settings, monkeypatch):
    from airloop.config import get_settings
    from airloop.features import apply_repo
    from airloop.online_read import redis_reader

    monkeypatch.setenv("AIRLOOP_ONLINE_STORE", "sqlite")
    settings = get_settings()
    store = apply_repo(settings)
    reader, why = redis_reader(store, store.get_feature_service(settings.spec.feature_service_name))
    assert reader is None and "sqlite" in why


@pytest.mark.parametrize("kind", [0, 1])
def test_fast_scorer_equals_the_batch_scorer_for_every_model_type(filled, kind):
    import pyarrow.parquet as pq

    from airloop import lake
    from airloop.model import MODEL_TYPES, predict
    from airloop.online_read import redis_reader
    from airloop.score import score_shard
    from airloop.serve import fast_scorer
    from airloop.train import build_pipeline

    s, store = filled["settings"], filled["store"]
    spec = s.spec
    model_type = MODEL_TYPES[spec.task][kind]
    ds = filled["days"][-1]
    train = pd.concat([_features(s, d) for d in filled["days"]])
    rng = np.random.default_rng(kind)
    y = rng.random(len(train)) < 0.3 if spec.task == "binary_classification" else rng.normal(10, 3, len(train))
    params = {"max_iter": 30} if model_type == "hist_gradient_boosting" else {}
    pipe = build_pipeline(s, model_type, params).fit(train[spec.model_features], y)
    score, why = fast_scorer(s, pipe)
    assert score is not None, f"{model_type}: {why}"

    # the batch scorer's predictions of the recent day, and the service's fast path on the online store's rows
    groups = list(range(pq.ParquetFile(lake.data_file(s, lake.FEATURES, ds)).num_row_groups))
    version = {"version": model_type, "run_id": "test"}
    shard = {"ds": ds, "plan": "fast-paths", "shard": 0, "row_groups": groups, "models": {lake.PREDICTIONS: version}}
    part = score_shard(s, shard, loaded={model_type: pipe})["parts"][lake.PREDICTIONS]
    batch = pd.read_parquet(part).drop_duplicates(spec.entity, keep="last")
    ids = batch[spec.entity].astype(int).tolist()
    reader, _ = redis_reader(store, store.get_feature_service(spec.feature_service_name))
    online = reader.read(ids)
    got = score({f: online[f] for f in spec.model_features})
    np.testing.assert_allclose(got, batch["score"].to_numpy(), rtol=1e-12, atol=1e-12)

    # missing values and unknown categories: the fast path against the pipeline itself
    cols = {f: list(online[f]) for f in spec.model_features}
    for j, f in enumerate(spec.model_features):
        for i in range(j, len(ids), 7):
            cols[f][i] = None if f not in spec.categorical_features or i % 2 else "never-seen"
    frame = pd.DataFrame({f: cols[f] if f in spec.categorical_features else np.array(cols[f], "float64") for f in cols})
    np.testing.assert_allclose(score(cols), predict(s, pipe, frame), rtol=1e-12, atol=1e-12)


def test_fast_scorer_declines_a_pipeline_it_does_not_know(settings):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from airloop.model import predict
    from airloop.serve import fast_scorer, plain_scorer
    from airloop.train import build_pipeline

    spec = settings.spec
    pipe = build_pipeline(settings, "logistic_regression")
    pipe.steps[1] = ("model", LogisticRegression(fit_intercept=False))
    pipe.steps.insert(1, ("scale", StandardScaler(with_mean=False)))
    frame = pd.DataFrame(
        {f: ["basic", "premium"] * 10 if f in spec.categorical_features else range(20) for f in spec.model_features}
    )
    pipe.fit(frame, [0, 1] * 10)
    score, why = fast_scorer(settings, pipe)
    assert score is None and "steps" in why
    fallback = plain_scorer(settings, pipe)  # what the service scores with instead
    cols = {f: frame[f].tolist() for f in spec.model_features}
    np.testing.assert_allclose(fallback(cols), predict(settings, pipe, frame), rtol=1e-12, atol=1e-12)
