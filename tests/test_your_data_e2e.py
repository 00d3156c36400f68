"""A new user's path, as the README tells it, on data airloop did not generate: `airloop init` on a folder of
hourly exports (one station, 24 rows a day, integer-coded categories, dates in 2011, labels as a separate
feed), then `airloop run` over 45 days with settings only. No project file is edited; the console is clean."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from foreign import START, write_days

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
AIRLOOP = str(Path(sys.executable).with_name("airloop"))
SMALL_DATA = {"AIRLOOP_GATE_MIN_ROWS": "40", "AIRLOOP_MIN_NEW_LABELS": "48"}  # 24 rows a day (README: small data)


def _user_env(home: Path, **extra: str) -> dict[str, str]:
    """A shell as the user's: no test-session Airflow or airloop variables, the home and the settings named."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AIRLOOP_"))}
    return {**env, "AIRLOOP_HOME": str(home), **SMALL_DATA, **extra}


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (the landing zone: batches and labels)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _run_user_days(root: Path, days: int, station: int | str) -> dict:
    home = root / "home"
    write_days(home / "landing", days, station=station)
    landing = _digest(home / "landing")
    spec = root / "specs" / "bikes.yaml"
    init = subprocess.run(
        [AIRLOOP, "init", "--from", str(home / "landing"), "--entity", "station", "--timestamp", "dteday",
         "--label", "busy", "--task", "binary_classification", "--name", "bikes", "--out", str(spec)],
        capture_output=True, text=True, env=_user_env(home),
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    env = _user_env(home, AIRLOOP_SPEC_PATH=str(spec))
    last = (START + pd.Timedelta(days=days - 1)).isoformat()
    run = subprocess.run(
        [AIRLOOP, "run", "--from", START.isoformat(), "--to", last], capture_output=True, text=True, env=env
    )
    status = subprocess.run([AIRLOOP, "status", "--json"], capture_output=True, text=True, env=env)
    summary = json.loads((home / "run_summary.json").read_text()) if run.returncode == 0 else {}
    return {
        "home": home,
        "env": env,
        "run": run,
        "status": json.loads(status.stdout),
        "last": last,
        "summary": summary,
        "landing": landing,
    }


@pytest.fixture(scope="module")
def hourly(tmp_path_factory):
    before = _git_status()
    out = _run_user_days(tmp_path_factory.mktemp("yourdata"), 45, station=7)
    out["git_before"], out["git_after"] = before, _git_status()
    return out


def test_a_history_of_2011_gives_a_champion_predictions_and_drift_reports(hourly):
    run, status = hourly["run"], hourly["status"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("[2011-")]
    assert len(lines) == 45
    assert status["home"] == str(hourly["home"]), "status (run as the README says) reads the same state"
    assert status["champion_version"] is not None
    # the first champion was trained on the day its check asked (its labels end a day earlier: the label feed)
    promoted = min(r["trigger_ds"] for r in status["retrains"] if r["gate"] == "promoted")
    scored = [Path(p).parent.name.removeprefix("ds=") for p in status["predictions"]]
    expected = pd.date_range(pd.Timestamp(promoted) + pd.Timedelta(days=1), hourly["last"]).strftime("%Y-%m-%d")
    assert scored == list(expected), "every day after the first champion is scored"
    preds = pd.read_parquet(status["predictions"][-1])
    assert len(preds) == 24 and set(preds["station"]) == {7}
    assert len(status["reports"]) >= 30 and all(Path(r).exists() for r in status["reports"])
    # bounded disk: HTML pages of the last AIRLOOP_REPORT_HTML_DAYS days only; every report kept as a snapshot
    pages = sorted(hourly["home"].glob("monitoring/ds=*/report.html"))
    assert 0 < len(pages) <= 15 and len(list(hourly["home"].glob("monitoring/ds=*/report.json.gz"))) >= 30
    # flat memory: the run's process holds no more on day 45 than on day 10 (+20 %)
    rss = [day["rss_mb"] for day in hourly["summary"]["days"]]
    assert len(rss) == 45 and max(rss[30:]) <= 1.2 * rss[9], rss


def test_the_console_is_clean_and_no_project_file_changed(hourly):
    out = hourly["run"].stdout + hourly["run"].stderr
    assert "[error" not in out and "Traceback" not in out
    assert out.count("not emailed") == 1, "an unconfigured alert address is said once"
    assert _digest(hourly["home"] / "landing") == hourly["landing"], "airloop run never changes landing data"
    warnings = [line for line in out.splitlines() if "[warning" in line and "alerts are not emailed" not in line]
    assert warnings == [], warnings
    assert hourly["git_after"] == hourly["git_before"], "the user's run wrote nothing into the project"


def test_a_second_run_resumes_and_skips_the_days_it_has_done(hourly):
    again = subprocess.run(
        [AIRLOOP, "run", "--from", START.isoformat(), "--to", hourly["last"]],
        capture_output=True,
        text=True,
        env=hourly["env"],
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done already (skipped") == 45


def test_string_entity_ids_run_the_same_way(tmp_path):
    out = _run_user_days(tmp_path, 9, station="S-007")
    assert out["run"].returncode == 0, out["run"].stdout[-3000:]
    console = out["run"].stdout + out["run"].stderr
    assert console.count("not emailed") == 1, "an unconfigured alert address is said once"
    assert out["status"]["champion_version"] is not None
    preds = pd.read_parquet(out["status"]["predictions"][-1])
    assert set(preds["station"]) == {"S-007"}
    day = Path(out["status"]["predictions"][-1]).parent.name.removeprefix("ds=")
    lineage = [AIRLOOP, "lineage", "--date", day, "--entity", "S-007", "--json"]
    trace = subprocess.run(lineage, capture_output=True, text=True, env=out["env"])
    assert trace.returncode == 0, trace.stderr[-2000:]
    assert str(json.loads(trace.stdout)["model_version"]["version"]) == str(preds["model_version"].iloc[0])
    # a day already run is skipped, and run again with --force; neither run touches the landing data
    again = [AIRLOOP, "run", "--from", out["last"], "--to", out["last"]]
    checked = out["home"] / "monitoring" / f"ds={out['last']}" / "result.json"
    recorded = checked.stat().st_mtime_ns
    skipped = subprocess.run(again, capture_output=True, text=True, env=out["env"])
    assert skipped.returncode == 0 and f"[{out['last']}] done already (skipped" in skipped.stdout, skipped.stderr
    forced = subprocess.run([*again, "--force"], capture_output=True, text=True, env=out["env"])
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-3000:]
    day_lines = [line for line in forced.stdout.splitlines() if line.startswith(f"[{out['last']}]")]
    assert len(day_lines) == 1 and "done already" not in day_lines[0], forced.stdout[-3000:]
    assert checked.stat().st_mtime_ns > recorded, "--force ran the day's monitor check again"
    assert _digest(out["home"] / "landing") == out["landing"], "airloop run never changes landing data"


def test_the_demo_keeps_a_users_home_and_its_console_has_no_error(hourly, tmp_path):
    refused = subprocess.run([AIRLOOP, "demo", "--days", "3"], capture_output=True, text=True, env=hourly["env"])
    assert refused.returncode == 2 and "will not delete it" in refused.stderr
    assert (hourly["home"] / "landing").exists()
    env = _user_env(tmp_path / "demo")
    # day 6 is the demo's schema break: a designed quarantine is the day's line, not an [error] traceback
    demo = subprocess.run([AIRLOOP, "demo", "--days", "6"], capture_output=True, text=True, env=env)
    assert demo.returncode == 0, demo.stderr[-3000:]
    console = demo.stdout + demo.stderr
    assert "[error" not in console and "Traceback" not in console, console[-3000:]
    assert "[2026-01-06] | QUARANTINED (see " in demo.stdout and "vNone" not in demo.stdout
    status = json.loads(subprocess.run([AIRLOOP, "status", "--json"], capture_output=True, text=True, env=env).stdout)
    assert status["latest_validated"] == "2026-01-05" and status["champion_version"] is not None
