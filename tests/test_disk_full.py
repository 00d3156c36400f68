"""A full disk during ingestion, validation and scoring: a small tmpfs is the airloop home, a filler file
leaves too little space for the day. The stage fails with an error that says so, nothing is published (no
temp or staged file is left), and the same day succeeds once the space is freed. Needs root to mount the
tmpfs: under CI (any truthy ``CI``) a non-root run or a refused mount fails; elsewhere it skips."""

from __future__ import annotations

import os
import subprocess
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from airloop import lake
from live_airflow import IN_CI

DAY = "2026-01-01"


def _cannot(reason: str) -> None:
    if IN_CI:  # CI must run these: a skip there would hide that the full-disk paths went untested
        pytest.fail(f"{reason} (CI is set: this test must run here)")
    pytest.skip(reason)


@pytest.fixture
def small_disk(tmp_path, request):
    """A tmpfs of 48 MB (or the size given by indirect parametrization) mounted at ``tmp_path/home``."""
    mount = tmp_path / "home"
    mount.mkdir()
    if os.geteuid() != 0:
        _cannot("mounting a tmpfs needs root")
    size = getattr(request, "param", "48m")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        _cannot(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(home: Path, leave_mb: float) -> Path:
    """A filler file that leaves ``leave_mb`` free on the home's device."""
    filler = home / "filler.bin"
    free = os.statvfs(home).f_bavail * os.statvfs(home).f_frsize
    fill = int(free - leave_mb * 2**20)
    with open(filler, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * 2**20
        for _ in range(fill // 2**20):
            f.write(chunk)
        f.write(b"\0" * (fill % 2**20))  # to the byte: what is left is what was asked for
    return filler


def _published(settings, zone: str) -> list[str]:
    return sorted(str(p) for p in lake.zone_dir(settings, zone).rglob("*") if p.is_file())


def test_ingestion_and_validation_on_a_full_disk_fail_clearly_publish_nothing_and_succeed_after(
    small_disk, monkeypatch
):
    from airloop.config import get_settings
    from airloop.ingest import ingest_batch
    from airloop.simulate import simulate
    from airloop.storage import DiskFull
    from airloop.validate import validate_batch

    monkeypatch.setenv("AIRLOOP_HOME", str(small_disk))
    monkeypatch.setenv("AIRLOOP_ROWS_PER_DAY", "60000")
    monkeypatch.setenv("AIRLOOP_CUSTOMERS", "60000")
    monkeypatch.setenv("AIRLOOP_CHUNK_ROWS", "20000")
    s = get_settings()
    simulate(date.fromisoformat(DAY), 1, s)

    filler = _fill(small_disk, leave_mb=0.5)
    with pytest.raises(DiskFull, match=r"no space left on the device of .*ds=2026-01-01 \(0\.\d MB free\)"):
        ingest_batch(s, DAY)
    assert (
        not lake.data_file(s, lake.RAW, DAY).exists()
        and not (lake.partition(s, lake.RAW, DAY) / "_ingest.json").exists()
    )
    assert not [p for p in small_disk.rglob("*.tmp")], "a temp file was left behind"
    filler.unlink()
    ingested = ingest_batch(s, DAY)
    assert ingested["rows"] == 60000 and len(pd.read_parquet(lake.data_file(s, lake.RAW, DAY))) == 60000

    filler = _fill(small_disk, leave_mb=0.5)
    with pytest.raises(DiskFull, match="no space left on the device"):
        validate_batch(s, DAY)
    assert _published(s, lake.VALIDATED) == [] and not [p for p in small_disk.rglob("*.tmp")]
    filler.unlink()
    result = validate_batch(s, DAY)
    assert result["success"] and len(pd.read_parquet(lake.data_file(s, lake.VALIDATED, DAY))) == 60000


@pytest.mark.parametrize("small_disk", ["256m"], indirect=True)  # room for the MLflow store and online store
def test_scoring_on_a_full_disk_fails_clearly_leaves_nothing_and_succeeds_after(small_disk, monkeypatch):
    """Two places run out: a shard's staged part (too little room for the day's scores), and the publish
    (room for the parts but not for the partition made of them). Both times: a DiskFull naming where,
    no predictions partition, no staged part or temp file left."""
    from airloop.config import get_settings
    from airloop.features import materialize_features
    from airloop.ingest import ingest_batch
    from airloop.registry import CHAMPION, client
    from airloop.score import score_batch
    from airloop.simulate import simulate
    from airloop.storage import DiskFull
    from airloop.train import train_model
    from airloop.validate import validate_batch

    days = [f"2026-01-0{i}" for i in range(1, 6)]
    monkeypatch.setenv("AIRLOOP_HOME", str(small_disk))
    monkeypatch.setenv("AIRLOOP_CUSTOMERS", "60000")
    monkeypatch.setenv("AIRLOOP_SKEW_SAMPLE", "0")  # scoring writes only its parts and the partition
    monkeypatch.setenv("AIRLOOP_ROWS_PER_DAY", "600")  # four small days for the champion
    s = get_settings()
    simulate(date.fromisoformat(days[0]), 4, s)
    monkeypatch.setenv("AIRLOOP_ROWS_PER_DAY", "60000")  # the day scored: 60 000 rows
    monkeypatch.setenv("AIRLOOP_SCORE_SHARD_ROWS", "20000")  # in three shards, concatenated when published
    big = get_settings()
    simulate(date.fromisoformat(days[-1]), 1, big)
    for ds in days:
        ingest_batch(big, ds)
        validate_batch(big, ds)
        materialize_features(big, ds)
    client(big).set_registered_model_alias(big.registered_model, CHAMPION, train_model(big, days[3])["version"])
    ds = days[-1]
    target = lake.data_file(big, lake.PREDICTIONS, ds)
    score_batch(big, ds)
    size = target.stat().st_size  # the room the day's scores take (its three parts: about as much)
    target.unlink()

    for leave, where in (
        (0.15 * size, f"_staging/predictions/ds={ds}/plan-"),
        (1.5 * size, f"lake/predictions/ds={ds}"),
    ):
        filler = _fill(small_disk, leave_mb=leave / 2**20)
        with pytest.raises(DiskFull, match=rf"no space left on the device of \S*{where}\S* \(\d+\.\d MB free\)"):
            score_batch(big, ds)
        assert _published(big, lake.PREDICTIONS) == [], "a partial predictions partition was published"
        assert not [p for p in big.staging_dir.rglob("*") if p.is_file()], "staged parts were left behind"
        assert not [p for p in small_disk.rglob("*.tmp")], "a temp file was left behind"
        filler.unlink()
    scored = score_batch(big, ds)
    assert scored["rows"] == 60000 and scored["shards"] == 3 and len(pd.read_parquet(target)) == 60000
