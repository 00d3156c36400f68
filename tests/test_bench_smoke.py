"""Benchmarks are not tests, but a tiny run of each keeps them from rotting."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.fixture(autouse=True)
def _restore_environment():
    """Benchmarks configure airloop through os.environ; none of it may leak into later tests."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_parse_time_bench_runs():
    import parse_time

    results = parse_time.main(["--repeat", "1"])
    assert {"baseline", "dagbag", "airloop_daily.py", "airloop_monitor.py", "airloop_train.py"} <= set(results)
    assert all(v > 0 for v in results.values())


def test_validation_throughput_bench_runs(tmp_path, monkeypatch):
    import validation_throughput

    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path))
    result = validation_throughput.main(["--rows", "5000"])
    assert result["rows"] == 5000 and result["gx_s"] > 0 and result["pandas_s"] > 0


def test_feast_online_bench_runs(monkeypatch):
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    import feast_online

    monkeypatch.setenv("AIRLOOP_HOME", "unused")  # the bench makes its own
    result = feast_online.main(["--rows", "2000", "--lookups", "5"])
    assert result["feast_redis_rps"] > 0 and result["lookup_100_p99_ms"] > 0


def test_drift_bench_runs():
    import drift

    result = drift.main(["--rows", "3000", "--methods", "scipy,evidently"])
    assert all(result[m]["seconds"] > 0 for m in ("scipy", "evidently"))
    assert set(result["evidently"]["drifted"]) == set(drift.SHIFTED)  # the columns that really moved
