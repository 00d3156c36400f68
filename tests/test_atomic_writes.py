"""Atomic writes under a real SIGKILL: the partition is either absent or complete, never torn."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import date
from multiprocessing.synchronize import Event
from pathlib import Path

import pandas as pd
import pytest

from airloop import lake
from airloop.ingest import ingest_batch
from airloop.lake import DATA_FILE
from airloop.simulate import simulate_day

DAY = "2026-01-05"


def test_sigkill_during_ingest_write_leaves_nothing_readable_and_rerun_completes(settings, monkeypatch):
    monkeypatch.setenv("AIRLOOP_CUSTOMERS", "100000")
    monkeypatch.setenv("AIRLOOP_ROWS_PER_DAY", "100000")
    from airloop.config import get_settings

    big = get_settings()
    day = simulate_day(date.fromisoformat(DAY), big)
    landing = lake.landing(big, DAY)
    landing.mkdir(parents=True)
    for i in range(20):  # 2 M rows in 20 files: writing the partition takes a while
        day.to_parquet(landing / f"part-{i:02d}.parquet")
    raw = lake.partition(big, "raw", DAY)

    code = (
        "from airloop.config import get_settings; from airloop.ingest import ingest_batch; "
        f"ingest_batch(get_settings(), {DAY!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    temp = None
    deadline = time.monotonic() + 120
    while temp is None and proc.poll() is None and time.monotonic() < deadline:
        temp = next(iter(raw.glob(f".{DATA_FILE}.*.tmp")), None) if raw.exists() else None
        time.sleep(0.002)
    assert temp is not None, "the writer finished before the test saw its temp file: enlarge the batch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert proc.returncode == -signal.SIGKILL
    assert not (raw / DATA_FILE).exists(), "a killed writer must not leave a partition behind"
    assert DAY not in lake.dates(big, "raw"), "readers must not pick up the temp file"

    summary = ingest_batch(big, DAY)  # the retry
    assert summary["rows"] == 20 * len(day)
    assert len(pd.read_parquet(raw / DATA_FILE)) == 20 * len(day)
    assert not list(raw.glob(".*.tmp")), "the retry clears the killed writer's temp file"


# --- two writers of one target at once (two runs of a day): neither removes the other's temp file --------


def _write_slowly(target: str, text: str, ready: Event, go: Event) -> None:
    """A writer of ``target`` that holds its temp file open until told to finish (a child process)."""
    from airloop.storage import atomic_path

    with atomic_path(Path(target)) as tmp:
        tmp.write_text(text)
        ready.set()
        go.wait(60)


def test_overlapping_writers_of_one_target_both_succeed_and_a_dead_writers_temp_is_removed(tmp_path):
    from airloop.storage import atomic_path, write_text

    target = tmp_path / "data.txt"
    with atomic_path(target) as outer:  # one process, nested: the inner writer must not take the outer's temp
        outer.write_text("outer")
        write_text("inner", target)
        assert outer.exists()
    assert target.read_text() == "outer"  # the last rename wins

    ctx = multiprocessing.get_context("fork")
    ready, go = ctx.Event(), ctx.Event()
    alive = ctx.Process(target=_write_slowly, args=(str(target), "alive", ready, go))
    alive.start()
    assert ready.wait(60)
    write_text("meanwhile", target)  # another run writes the same target while the child is mid-write
    assert target.read_text() == "meanwhile" and len(list(tmp_path.glob(".data.txt.*.tmp"))) == 1
    go.set()
    alive.join(60)
    assert alive.exitcode == 0, "the live writer's temp file was removed under it"
    assert target.read_text() == "alive" and not list(tmp_path.glob(".*.tmp"))

    ready, go = ctx.Event(), ctx.Event()
    dead = ctx.Process(target=_write_slowly, args=(str(target), "dead", ready, go))
    dead.start()
    assert ready.wait(60)
    os.kill(dead.pid, signal.SIGKILL)
    dead.join(60)
    (left,) = tmp_path.glob(".data.txt.*.tmp")  # what a killed writer leaves
    write_text("next", target)
    assert target.read_text() == "next" and not left.exists() and not list(tmp_path.glob(".*.tmp"))


def test_overlapping_key_splits_of_one_folder_keep_their_own_buckets(tmp_path):
    """Two runs of a day split into the same stage folder at once (validate's duplicate checks, run by the
    daily and the release DAG): each reads back its own rows; a killed run's buckets are removed."""
    from airloop.storage import split_by_key, write_parquet

    source = write_parquet(pd.DataFrame({"k": range(100), "v": range(100)}), tmp_path / "in.parquet")
    folder = tmp_path / "staging"
    leftover = folder / "split-killed" / "bucket-0000.parquet"  # a claim whose lock file is gone with its run
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"left by a killed run")
    with split_by_key([source], ["k", "v"], ["k"], 4, folder, 30) as first:
        assert not leftover.exists()
        with split_by_key([source], ["k"], ["k"], 2, folder, 30) as second:
            assert sorted(pd.concat(map(pd.read_parquet, second))["k"]) == list(range(100))
        assert sorted(pd.concat(map(pd.read_parquet, first))["v"]) == list(range(100))
    assert not [p for p in folder.rglob("*") if p.is_file()]


# --- every other writer the README names: validate, features, score publish ------------------------------
# Each is killed by a real SIGKILL at the worst moment: its temp file fully written, the rename onto the
# partition not yet done. The child is forked from this process (the stage's libraries are imported once)
# and an audit hook (Python's own ``os.rename`` event, which ``os.replace`` raises) sends the signal, so the
# moment is exact rather than a race with a polling parent. No ``finally`` block or exit handler runs.

DAYS = [f"2026-01-0{i}" for i in range(1, 6)]
LAST = DAYS[-1]


def _killed_before_renaming_onto(target, stage) -> None:
    """Run ``stage()`` in a forked child that SIGKILLs itself when it is about to rename a file onto ``target``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        try:

            def at_rename(event: str, args: tuple) -> None:
                if event == "os.rename" and os.fspath(args[1]) == str(target):
                    os.kill(os.getpid(), signal.SIGKILL)

            sys.addaudithook(at_rename)
            stage()
            os._exit(3)  # the stage never renamed onto target
        except BaseException:
            os._exit(4)
    deadline = time.monotonic() + 180
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the writer of {target} did not reach its rename within 180 s")
        time.sleep(0.05)
    status = done[1]
    why = {3: "it finished without renaming a temp file onto it: not an atomic write", 4: "the stage raised"}
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, why.get(code, f"status {status}")


@pytest.fixture(scope="module")
def scored_days(tmp_path_factory):
    """Five small days ingested, validated, materialized; a champion; the last day scored in three shards."""
    from airloop.config import get_settings
    from airloop.features import materialize_features
    from airloop.registry import CHAMPION, client
    from airloop.score import score_batch
    from airloop.simulate import simulate
    from airloop.train import train_model
    from airloop.validate import validate_batch

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(tmp_path_factory.mktemp("kill") / "airloop"))
        mp.setenv("AIRLOOP_ROWS_PER_DAY", "300")
        mp.setenv("AIRLOOP_CUSTOMERS", "1500")
        mp.setenv("AIRLOOP_SCORE_SHARD_ROWS", "100")  # feature row groups of 100 rows: 3 scoring shards a day
        s = get_settings()
        simulate(date.fromisoformat(DAYS[0]), len(DAYS), s)
        for ds in DAYS:
            ingest_batch(s, ds)
            validate_batch(s, ds)
            materialize_features(s, ds)
        version = train_model(s, LAST)["version"]
        client(s).set_registered_model_alias(s.registered_model, CHAMPION, version)
        score_batch(s, LAST)
        yield s


def test_sigkill_before_the_validated_partition_is_renamed_leaves_no_validated_day(scored_days):
    from airloop.validate import validate_batch

    s = scored_days
    validated = lake.partition(s, "validated", LAST)
    target = validated / DATA_FILE
    target.unlink()
    _killed_before_renaming_onto(target, lambda: validate_batch(s, LAST))
    assert list(validated.glob(f".{DATA_FILE}.*.tmp")), "the child was killed with its temp file written"
    assert not target.exists() and LAST not in lake.dates(s, "validated")
    assert validate_batch(s, LAST)["success"]  # the retry
    assert target.read_bytes() == lake.data_file(s, "raw", LAST).read_bytes()
    assert not list(validated.glob(".*.tmp"))


def test_sigkill_before_the_feature_partition_is_renamed_keeps_the_previous_one(scored_days):
    from airloop.features import materialize_features

    s = scored_days
    target = lake.data_file(s, "features", LAST)
    before = target.read_bytes()
    zone = lake.zone_dir(s, "features")
    rows = len(pd.read_parquet(zone))  # the whole zone, as Feast's FileSource reads it
    _killed_before_renaming_onto(target, lambda: materialize_features(s, LAST))
    assert list(zone.glob(f".{target.name}.*.tmp")), "the child was killed with its temp file written"
    assert target.read_bytes() == before and len(pd.read_parquet(zone)) == rows, "readers see the old day"
    # the retry takes the Feast-folder lock the killed writer held (flock dies with its process)
    assert materialize_features(s, LAST)["rows"] == s.rows_per_day
    assert target.read_bytes() == before and not list(zone.glob(".*.tmp"))


def test_sigkill_while_publishing_scores_keeps_the_previous_predictions(scored_days):
    from airloop.score import plan_scoring, publish_scores, score_shard

    s = scored_days
    target = lake.data_file(s, "predictions", LAST)
    before = target.read_bytes()
    shards = [score_shard(s, shard) for shard in plan_scoring(s, LAST)]
    assert len(shards) == 3  # published by concatenating the parts into a temp file, then one rename
    _killed_before_renaming_onto(target, lambda: publish_scores(s, shards))
    assert list(target.parent.glob(f".{DATA_FILE}.*.tmp")), "the child was killed with its temp file written"
    assert target.read_bytes() == before, "readers see the previous predictions of the day, whole"
    assert all(os.path.exists(p) for sh in shards for p in sh["parts"].values()), "the scored parts are kept"
    assert publish_scores(s, shards)["rows"] == s.rows_per_day  # the retry
    published = pd.read_parquet(target)
    assert len(published) == s.rows_per_day and published[s.spec.entity].is_unique
    assert not list(target.parent.glob(".*.tmp"))
