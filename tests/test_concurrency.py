"""Two runs at once (a manual trigger while a backfill runs, a release during the nightly run): the
stages take turns on the shared project files (GX project, Feast registry and online store) and a day
run twice at the same time, scoring included, gives the same partitions, byte for byte, with no
duplicate rows; two scoring plans of one day never mix their parts, even when the champion moves
between them."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from datetime import date
from typing import Any

import pandas as pd
import pytest

from airloop import lake

READY = [f"2026-01-0{i}" for i in range(1, 5)]  # run one at a time first; the champion is trained on them
DAYS = ["2026-01-05", "2026-01-05", "2026-01-06"]  # the same day twice, and another day, all at once


def _daily_stages(home: str, ds: str, scoring: Any = None) -> str:
    """What the daily DAG runs for ``ds``; scoring is skipped while there is no champion, as there. With a
    ``scoring`` barrier, scoring starts when the other runs of the day reach it too (materializing takes
    turns, so the runs would otherwise score one after the other)."""
    os.environ["AIRLOOP_HOME"] = home
    from airloop.config import get_settings
    from airloop.features import materialize_features
    from airloop.ingest import ingest_batch
    from airloop.score import NoChampion, score_batch
    from airloop.validate import validate_batch

    s = get_settings()
    ingest_batch(s, ds)
    validate_batch(s, ds)
    materialize_features(s, ds)
    if scoring is not None:
        scoring.wait(300)
    try:
        score_batch(s, ds)
    except NoChampion:
        pass
    return ds


def _digests(settings, ds: str, zones: tuple[str, ...] = (lake.RAW, lake.VALIDATED, lake.FEATURES)) -> dict[str, str]:
    return {z: hashlib.sha256(lake.data_file(settings, z, ds).read_bytes()).hexdigest() for z in zones}


def _staged_parts(settings) -> list[str]:
    return [str(p) for p in settings.staging_dir.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def champion_home(tmp_path_factory):
    """Four small days run, a champion trained on them; days scored in three shards of 200 rows."""
    from airloop.config import get_settings
    from airloop.registry import CHAMPION, client
    from airloop.simulate import simulate
    from airloop.train import train_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(tmp_path_factory.mktemp("concurrency") / "airloop"))
        mp.setenv("AIRLOOP_SCORE_SHARD_ROWS", "200")  # 600 rows a day: three scoring shards
        # the skew probe of the newest day reads the online store, which a newer day's run at the same
        # time may have moved on: a false alarm this test is not about
        mp.setenv("AIRLOOP_SKEW_SAMPLE", "0")
        s = get_settings()
        simulate(date.fromisoformat(READY[0]), len(READY) + 2, s)
        for ds in READY:
            _daily_stages(str(s.home), ds)
        version = train_model(s, READY[-1])["version"]
        client(s).set_registered_model_alias(s.registered_model, CHAMPION, version)
        yield s


def test_the_same_day_run_twice_at_once_gives_identical_partitions(champion_home):
    from airloop.features import online_features
    from airloop.registry import CHAMPION, version_by_alias

    settings = champion_home
    champion = str(version_by_alias(settings, CHAMPION).version)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(len(DAYS)) as pool:
        same_day = manager.Barrier(DAYS.count(DAYS[0]))
        runs = [(str(settings.home), ds, same_day if ds == DAYS[0] else None) for ds in DAYS]
        assert pool.starmap(_daily_stages, runs) == DAYS
    scored = (lake.RAW, lake.VALIDATED, lake.FEATURES, lake.PREDICTIONS)
    together = {ds: _digests(settings, ds, scored) for ds in set(DAYS)}
    assert _staged_parts(settings) == [], "every run's scoring parts are removed once published"
    for ds in sorted(set(DAYS)):  # the same days again, one at a time: the same bytes
        _daily_stages(str(settings.home), ds)
    assert {ds: _digests(settings, ds, scored) for ds in set(DAYS)} == together
    landed = pd.read_csv(next(lake.landing(settings, DAYS[0]).glob("*.csv")))
    validated = pd.read_parquet(lake.data_file(settings, lake.VALIDATED, DAYS[0]))
    assert len(validated) == len(landed) and not validated.duplicated([settings.spec.entity]).any()
    keys = [settings.spec.entity, settings.spec.timestamp]
    for ds in set(DAYS):  # one prediction per feature row, in order, all by the champion
        features = pd.read_parquet(lake.data_file(settings, lake.FEATURES, ds), columns=keys)
        predictions = pd.read_parquet(lake.data_file(settings, lake.PREDICTIONS, ds))
        pd.testing.assert_frame_equal(predictions[keys], features)
        assert set(predictions["model_version"]) == {champion}
    # the online store holds the newest day's values (the older day never overwrites them)
    newest = pd.read_parquet(lake.data_file(settings, lake.FEATURES, DAYS[-1]))
    sample = newest.sample(20, random_state=0)
    online = online_features(settings, sample[settings.spec.entity].tolist())
    assert online["tenure_months"].tolist() == sample["tenure_months"].tolist()


def test_two_scoring_plans_of_a_day_at_once_publish_each_its_own_models_rows(champion_home):
    """The daily and release DAGs score a day at once and the champion moves between their plans: their
    shards interleave, and each publish is the whole day scored by its own plan's model."""
    from airloop.registry import CHAMPION, client, version_by_alias
    from airloop.score import plan_scoring, publish_scores, score_shard
    from airloop.train import train_model

    s, ds = champion_home, READY[-1]
    first = plan_scoring(s, ds)
    before = first[0]["models"][lake.PREDICTIONS]["version"]
    after = train_model(s, ds)["version"]
    client(s).set_registered_model_alias(s.registered_model, CHAMPION, after)
    second = plan_scoring(s, ds)
    assert str(version_by_alias(s, CHAMPION).version) == after != before and len(first) == len(second) == 3
    scored: dict[int, list[dict]] = {0: [], 1: []}
    for a, b in zip(first, second, strict=True):  # shard by shard, each run in turn
        scored[0].append(score_shard(s, a))
        scored[1].append(score_shard(s, b))
    features = pd.read_parquet(lake.data_file(s, lake.FEATURES, ds))
    for plan, version in ((0, before), (1, after)):
        assert publish_scores(s, scored[plan])["model_version"] == version
        published = pd.read_parquet(lake.data_file(s, lake.PREDICTIONS, ds))
        assert set(published["model_version"]) == {version}, f"plan {plan} published another plan's rows"
        assert published[s.spec.entity].tolist() == features[s.spec.entity].tolist()
    assert _staged_parts(s) == []


def test_days_run_out_of_order_give_the_same_features_as_in_order(tmp_path, monkeypatch):
    """A backfill does not order its days: the newer day computed first (without the older day's rows in
    its aggregate windows) is computed again when the older day arrives."""
    from airloop.config import get_settings
    from airloop.simulate import simulate

    homes = {}
    for order in (["2026-01-01", "2026-01-02"], ["2026-01-02", "2026-01-01"]):
        home = tmp_path / "-".join(order)
        monkeypatch.setenv("AIRLOOP_HOME", str(home))
        s = get_settings()
        simulate(date(2026, 1, 1), 2, s)
        for ds in order:
            _daily_stages(str(home), ds)
        homes[order[0]] = {ds: _digests(s, ds) for ds in ("2026-01-01", "2026-01-02")}
    assert homes["2026-01-02"] == homes["2026-01-01"]
