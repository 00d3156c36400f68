"""Feast configuration: one feature_store.yaml, online store chosen by settings."""

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
