"""A full disk during ingestion and validation: a small tmpfs is the airloop home, a filler file leaves
too little space for the day. The stage fails with an error that says so, nothing is published, and the
same day succeeds once the space is freed. Needs root to mount the tmpfs (CI runs as root: it fails there
when the mount is refused; elsewhere a non-root run skips)."""

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


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "home"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        reason = f"cannot mount a tmpfs: {done.stderr.decode().strip()}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(home: Path, leave_mb: float) -> Path:
    """A filler file that leaves ``leave_mb`` free on the home's device."""
    filler = home / "filler.bin"
    free = os.statvfs(home).f_bavail * os.statvfs(home).f_frsize
    with open(filler, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * 2**20
        for _ in range(int((free - leave_mb * 2**20) // 2**20)):
            f.write(chunk)
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
