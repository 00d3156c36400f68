"""Atomic writes under a real SIGKILL: the partition is either absent or complete, never torn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date

import pandas as pd

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
