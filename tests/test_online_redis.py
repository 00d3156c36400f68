"""The Redis online store, used for real (127.0.0.1:6379): materialize a day and read it back."""

from __future__ import annotations

import os
import socket
from datetime import date

import pandas as pd
import pytest

from airloop import lake
from airloop.features import materialize_features, online_features
from airloop.ingest import ingest_batch
from airloop.simulate import write_landing
from airloop.validate import validate_batch

DAY = "2026-01-02"
REDIS_DB = 7  # keep the tests' keys away from anything else on this Redis


@pytest.fixture
def redis_settings(settings, monkeypatch):
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        message = "Redis is not running on 127.0.0.1:6379 (start it: see README, production mode)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    monkeypatch.setenv("AIRLOOP_ONLINE_STORE", "redis")
    monkeypatch.setenv("AIRLOOP_REDIS_CONNECTION", f"127.0.0.1:6379,db={REDIS_DB}")
    from airloop.config import get_settings

    yield get_settings()
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()


def test_materialize_into_redis_and_read_back(redis_settings):
    s = redis_settings
    write_landing(date.fromisoformat(DAY), s)
    ingest_batch(s, DAY)
    validate_batch(s, DAY)
    assert materialize_features(s, DAY)["online_store"] == "redis"
    import redis

    assert redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).dbsize() == s.rows_per_day
    batch = pd.read_parquet(lake.data_file(s, "validated", DAY)).sort_values("customer_id")
    online = online_features(s, batch["customer_id"].head(20).tolist()).sort_values("customer_id")
    expected = batch.head(20).reset_index(drop=True)
    assert online["monthly_charges"].tolist() == pytest.approx(expected["monthly_charges"].tolist())
    assert online["plan"].tolist() == expected["plan"].tolist()
