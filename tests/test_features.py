"""Feast configuration: one feature_store.yaml, online store chosen by settings."""

import pytest

from airloop.config import Settings
from airloop.features import get_store, repo_objects


def test_online_store_is_chosen_by_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path))
    sqlite = get_store(Settings()).config.online_store
    assert sqlite.type == "sqlite" and sqlite.path == str(tmp_path / "feast" / "online.db")
    monkeypatch.setenv("AIRLOOP_ONLINE_STORE", "redis")
    monkeypatch.setenv("AIRLOOP_REDIS_CONNECTION", "127.0.0.1:6379")
    redis = get_store(Settings()).config.online_store
    assert redis.type == "redis" and redis.connection_string == "127.0.0.1:6379"


def test_feature_repo_declares_the_spec_features(settings):
    objects = {type(o).__name__: o for o in repo_objects(settings)}
    assert {"Entity", "FileSource", "FeatureView", "FeatureService"} <= set(objects)
    assert [f.name for f in objects["FeatureView"].features] == settings.spec.model_features


@pytest.mark.parametrize("fn", ["count", "sum", "mean", "max"])
def test_vectorised_window_aggregate_matches_pandas_groupby_rolling(fn):
    """The O(n log n) window aggregate gives what pandas' per-entity rolling gives (NaNs skipped,
    windows (t - w, t], several rows per entity and day, ties in time)."""
    import numpy as np
    import pandas as pd

    from airloop.features import window_aggregate

    rng = np.random.default_rng(3)
    n = 20_000  # 6000 entities: enough that an entity x time-span key would overflow int64
    df = pd.DataFrame(
        {
            "e": rng.integers(0, 6000, n),
            "t": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 40 * 24, n), unit="h"),
            "v": np.where(rng.random(n) < 0.2, np.nan, rng.normal(10, 3, n)),
        }
    ).sort_values(["e", "t"], kind="stable", ignore_index=True)
    column, agg = ("one", "sum") if fn == "count" else ("v", fn)
    df["one"] = 1.0
    expected = df.groupby("e").rolling("7D", on="t")[column].agg(agg).to_numpy()
    got = window_aggregate(
        df["e"].to_numpy(), df["t"].to_numpy("datetime64[ns]"), None if fn == "count" else df["v"].to_numpy(), fn, 7
    )
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, equal_nan=True)
