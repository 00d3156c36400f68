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


def test_serving_bench_runs():
    import shutil
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        assert shutil.which("wrk"), "wrk is not installed (apt-get install wrk)"
    except (OSError, AssertionError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis on 127.0.0.1:6379 and wrk are needed: {exc}")
        pytest.skip(f"Redis on 127.0.0.1:6379 and wrk are needed: {exc}")
    import serving

    result = serving.main(["--seconds", "1", "--days", "5"])
    for n in (1, 100):
        assert result[n]["airloop"]["rps"] > 0 and result[n]["airloop"]["errors"] + result[n]["airloop"]["non2xx"] == 0
        assert result[n]["baseline"]["rps"] > 0 and result[n]["throughput_ratio"] > 0


def test_stage_scaling_and_orchestration_benches_run():
    import orchestration
    import run_all
    import stages

    st = stages.main(["--sizes", "3000"])
    for stage in stages.STAGES:
        assert st["stages"][stage][3000]["seconds"] > 0 and st["stages"][stage][3000]["rows"] == 3000
    assert st["stages"]["score"][3000]["bare_predict_s"] > 0
    assert stages.exponent([10, 100, 1000], [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    orch = orchestration.main(["--rows", "1500", "--repeat", "1"])
    (cycle,) = orch["sizes"]
    assert all(cycle[f"{side}_{kind}_s"] > 0 for side in ("plain", "airflow") for kind in ("cold", "warm"))
    assert cycle["plain_warm_s"] < cycle["plain_cold_s"]  # the second cycle in a process pays no imports
    md = run_all.render(
        {
            "parse": {"baseline": 1.0, "dagbag": 1.0, "airloop_daily.py": 0.2},
            "validation": {"rows": 10, "gx_s": 1.0, "pandas_s": 0.5, "ratio": 2.0},
            "feast": {},
            "drift": {},
            "stages": st,
            "orchestration": orch,
            "demo": {"days": 1, "wall_s": 1.0, "stage_seconds": {"airloop_daily.score": 1.0}},
        },
        (1.0, 1.0, 1.0),
        (1.0, 1.0, 1.0),
        60.0,
        "python bench/run_all.py",
    )
    assert "| score, 3,000 rows |" in md and "nightly cycle via Airflow" in md


def test_drift_bench_runs():
    import drift

    result = drift.main(["--rows", "3000", "--methods", "scipy,evidently"])
    assert all(result[m]["seconds"] > 0 for m in ("scipy", "evidently"))
    assert set(result["evidently"]["drifted"]) == set(drift.SHIFTED)  # the columns that really moved


def test_run_all_replaces_only_its_block_of_benchmarks_md():
    import run_all

    first = run_all.merge("# Benchmarks\n\n## Before/after of a fix\n\nhand-written\n", "## Latest\n\n| a |\n")
    assert first.startswith("# Benchmarks\n\n" + run_all.BEGIN) and first.endswith("hand-written\n")
    second = run_all.merge(first, "## Latest\n\n| b |\n")
    assert "| b |" in second and "| a |" not in second and second.count(run_all.BEGIN) == 1
    assert second.endswith("## Before/after of a fix\n\nhand-written\n")
