"""Benchmarks are not tests, but a tiny run of each keeps them from rotting."""

import math
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def printed(out: str, pattern: str) -> list[tuple[float, ...]]:
    """The numbers of every printed line that matches ``pattern`` (a regex of the whole line, its numbers in
    groups); fails when no line does, so a changed format is caught too."""
    found = [tuple(float(g.replace(",", "")) for g in m.groups() if g) for m in re.finditer(pattern, out, re.M)]
    assert found, f"no line matching {pattern!r} in:\n{out}"
    return found


def same(shown: float, value: float, decimals: int = 2) -> bool:
    """A number printed with ``decimals`` decimals is ``value`` rounded (and a real, positive number)."""
    return math.isfinite(value) and value > 0 and abs(shown - value) <= 0.51 * 10**-decimals


@pytest.fixture(autouse=True)
def _restore_environment():
    """Benchmarks configure airloop through os.environ; none of it may leak into later tests."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_parse_time_bench_runs(capsys):
    import parse_time

    results = parse_time.main(["--repeat", "1"])
    assert {"baseline", "dagbag", "airloop_daily.py", "airloop_monitor.py", "airloop_train.py"} <= set(results)
    out, base = capsys.readouterr().out, results["baseline"]
    number = r"(\d+\.\d{3}) s"
    lines = printed(out, rf"^airloop_\w+\.py +{number}  \( *(\d+\.\d\d)x the airflow import\) +{number}(?: .*)?$")
    assert len(lines) == len([k for k in results if k.endswith(".py")]), "one line per DAG file"
    for secs, ratio, cold in lines:
        assert same(ratio, secs / base) and cold > 0
    ((bag, ratio),) = printed(out, rf"^DagBag of dags/ \(all files\) +{number}  \( *(\d+\.\d\d)x\)(?: .*)?$")
    assert same(bag, results["dagbag"], 3) and same(ratio, results["dagbag"] / base)


def test_validation_throughput_bench_runs(tmp_path, monkeypatch, capsys):
    import validation_throughput

    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path))
    result = validation_throughput.main(["--rows", "5000"])
    assert result["rows"] == 5000
    out = capsys.readouterr().out
    ((ratio,),) = printed(out, r"^ratio GX / pandas: (\d+\.\d\d)x \(target <= 3x\)$")
    assert same(ratio, result["gx_s"] / result["pandas_s"]) and result["ratio"] == result["gx_s"] / result["pandas_s"]
    for name, key in ((r"pandas hand-written checks", "pandas_s"), (r"GX suite \(whole batch\)", "gx_s")):
        ((secs, rate),) = printed(out, rf"^{name} +(\d+\.\d\d) s +([\d,]+) rows/s$")
        assert same(secs, result[key]) and abs(rate - 5000 / result[key]) <= 0.5


def test_feast_online_bench_runs(monkeypatch, capsys):
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
    out = capsys.readouterr().out
    lines = printed(out, r"^materialize (?:sqlite|redis): airloop ([\d,]+) rows/s \| feast ([\d,]+) rows/s \| "
                    r"bare ([\d,]+) rows/s \| airloop/feast (\d+\.\d)x$")  # fmt: skip
    assert re.findall(r"^materialize (sqlite|redis):", out, re.M) == ["sqlite", "redis"]
    for store, (airloop, feast, bare, ratio) in zip(("sqlite", "redis"), lines, strict=True):
        assert abs(airloop - result[f"airloop_{store}_rps"]) <= 0.5 and abs(feast - result[f"feast_{store}_rps"]) <= 0.5
        assert abs(bare - result[f"{store}_baseline_rps"]) <= 0.5
        assert same(ratio, result[f"airloop_over_feast_{store}"], 1)
        assert same(ratio, result[f"airloop_{store}_rps"] / result[f"feast_{store}_rps"], 1)
    for n in (1, 100):
        ((p50, p99),) = printed(out, rf"^Redis lookup +{n} entities: p50 (\d+\.\d) ms, p99 (\d+\.\d) ms$")
        assert same(p50, result[f"lookup_{n}_p50_ms"], 1) and same(p99, result[f"lookup_{n}_p99_ms"], 1)


def test_serving_bench_runs(capsys):
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
    ratios = printed(capsys.readouterr().out, r"^throughput airloop / two-hop baseline: (\d+\.\d\d)x$")
    assert len(ratios) == 2  # one per request size
    for (ratio,), n in zip(ratios, (1, 100), strict=True):
        assert same(ratio, result[n]["airloop"]["rps"] / result[n]["baseline"]["rps"])


def test_stage_scaling_and_orchestration_benches_run(capsys):
    import orchestration
    import run_all
    import stages

    st = stages.main(["--sizes", "3000"])
    for stage in stages.STAGES:
        assert st["stages"][stage][3000]["seconds"] > 0 and st["stages"][stage][3000]["rows"] == 3000
    score = st["stages"]["score"][3000]
    out = capsys.readouterr().out
    ((ratio,),) = printed(out, r"^score +3,000 rows .* -> (\d+\.\d\d)x of bare \(target >= 0\.5x\)$")
    # bare predict is part of what the stage does: the ratio is a share, at most 1
    assert same(ratio, score["bare_predict_s"] / score["seconds"]) and ratio <= 1.0
    assert stages.exponent([10, 100, 1000], [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    orch = orchestration.main(["--rows", "1500", "--repeat", "1"])
    (cycle,) = orch["sizes"]
    out = capsys.readouterr().out
    for kind in ("cold", "warm"):
        pattern = (
            rf"^  {kind}: plain Python +(\d+\.\d) s, Airflow dag\.test\(airloop_daily\) +(\d+\.\d) s "
            r"\(\+(-?\d+\.\d) s\) -> (\d+\.\d\d)x \(target <= 1\.3x\)$"
        )
        ((plain, airflow, extra, ratio),) = printed(out, pattern)
        p, a = cycle[f"plain_{kind}_s"], cycle[f"airflow_{kind}_s"]
        assert same(plain, p, 1) and same(airflow, a, 1) and abs(extra - (a - p)) <= 0.051
        assert same(ratio, a / p) and same(cycle[f"{kind}_ratio"], a / p)
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


def test_drift_bench_runs(capsys):
    import drift

    result = drift.main(["--rows", "3000", "--methods", "scipy,evidently"])
    out = capsys.readouterr().out
    base = result["scipy"]["seconds"]
    for method in ("scipy", "evidently"):  # seconds, its ratio to scipy's, peak memory, drifted columns
        pattern = rf"^{method} +(\d+\.\d\d) +(\d+\.\d\d) +(\d+)  (\d+)/20 share (\d\.\d\d) \(.*\)$"
        ((secs, ratio, peak, drifted, share),) = printed(out, pattern)
        r = result[method]
        assert same(secs, r["seconds"]) and same(ratio, r["seconds"] / base) and peak > 0
        assert drifted == len(r["drifted"]) and abs(share - r["share"]) <= 0.0051
    assert printed(out, r"^scipy +\d+\.\d\d +(1\.00) ")  # the baseline against itself
    assert set(result["evidently"]["drifted"]) == set(drift.SHIFTED)  # the columns that really moved


def test_run_all_replaces_only_its_block_of_benchmarks_md():
    import run_all

    first = run_all.merge("# Benchmarks\n\n## Before/after of a fix\n\nhand-written\n", "## Latest\n\n| a |\n")
    assert first.startswith("# Benchmarks\n\n" + run_all.BEGIN) and first.endswith("hand-written\n")
    second = run_all.merge(first, "## Latest\n\n| b |\n")
    assert "| b |" in second and "| a |" not in second and second.count(run_all.BEGIN) == 1
    assert second.endswith("## Before/after of a fix\n\nhand-written\n")
