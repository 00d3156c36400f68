"""Benchmarks are not tests, but a tiny run of each keeps them from rotting."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


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
