"""Orchestration overhead: one nightly cycle (ingest → validate → materialize → score of one day)
run through Airflow (``airloop_daily`` with ``dag.test()``, parsing included) against the same stage
functions called in one plain Python process, on the same data.

Each process runs the cycle twice, the day's outputs removed before each run:
- **cold**, the first cycle, from the process's start (interpreter, imports, Airflow's DagBag and
  in-process Execution API included): what one ``airflow dags test`` costs;
- **warm**, the second cycle in the same process: the per-run cost once everything is loaded.
Target: Airflow <= 1.3x plain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TWICE = (
    "import shutil, time\n"
    "from airloop import lake\n"
    "from airloop.config import get_settings\n"
    "def clean():\n"
    "    s = get_settings()\n"
    "    for zone in ('raw', 'validated', 'predictions'):\n"
    f"        shutil.rmtree(lake.partition(s, zone, {stages.DAY!r}), ignore_errors=True)\n"
    f"    lake.data_file(s, 'features', {stages.DAY!r}).unlink(missing_ok=True)\n"
    "def cycle():\n"
    "{body}"
    "clean(); cycle(); print('first-end', time.time())\n"
    "clean(); t = time.perf_counter(); cycle(); print('second', time.perf_counter() - t)\n"
)
PLAIN = (
    "    from airloop.config import get_settings\n"
    "    from airloop.features import materialize_features\n"
    "    from airloop.ingest import ingest_batch\n"
    "    from airloop.score import score_batch\n"
    "    from airloop.validate import validate_batch\n"
    "    s = get_settings()\n"
    f"    ingest_batch(s, {stages.DAY!r}); validate_batch(s, {stages.DAY!r})\n"
    f"    materialize_features(s, {stages.DAY!r}); score_batch(s, {stages.DAY!r})\n"
)
AIRFLOW = (
    "    import sys, datetime\n"
    f"    sys.path.insert(0, {str(ROOT / 'plugins')!r})\n"
    "    from airloop_tools.runner import _quiet, load_dags, run\n"
    "    _quiet()\n"
    f"    state = run(load_dags()['airloop_daily'], datetime.date.fromisoformat({stages.DAY!r}))\n"
    "    assert state == 'success', state\n"
)


def _twice(body: str, env: dict[str, str]) -> tuple[float, float]:
    """(cold, warm) seconds of a fresh process that runs ``body`` twice."""
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", TWICE.format(body=body)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"run failed:\n{out.stderr[-3000:]}")
    marks = dict(line.split() for line in out.stdout.splitlines() if line.startswith(("first-end ", "second ")))
    return float(marks["first-end"]) - t0, float(marks["second"])


def measure(rows: int, repeat: int) -> dict[str, float]:
    """Median cold and warm seconds of both sides for one day of ``rows`` rows."""
    with tempfile.TemporaryDirectory(prefix="airloop-bench-orch-") as tmp:
        home = Path(tmp) / "airloop"
        stages.prepare(home, rows, 2000)
        env = stages._env(home, rows)
        env.update(
            {
                "AIRFLOW_HOME": str(Path(tmp) / "airflow"),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            }
        )
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
        plain, airflow = [], []
        for _ in range(repeat):  # alternate, so drifting machine load hits both sides alike
            plain.append(_twice(PLAIN, env))
            airflow.append(_twice(AIRFLOW, env))
    r = {"rows": rows}
    for i, kind in enumerate(("cold", "warm")):
        r[f"plain_{kind}_s"] = statistics.median(x[i] for x in plain)
        r[f"airflow_{kind}_s"] = statistics.median(x[i] for x in airflow)
        r[f"{kind}_ratio"] = r[f"airflow_{kind}_s"] / r[f"plain_{kind}_s"]
    return r


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="20000,200000", help="rows of the measured day (comma-separated sizes)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    results = []
    for rows in [int(x) for x in args.rows.split(",")]:
        r = measure(rows, args.repeat)
        results.append(r)
        print(f"one day of {rows:,} rows, median of {args.repeat} fresh processes per side")
        for kind in ("cold", "warm"):
            a, p = r[f"airflow_{kind}_s"], r[f"plain_{kind}_s"]
            print(
                f"  {kind}: plain Python {p:6.1f} s, Airflow dag.test(airloop_daily) {a:6.1f} s "
                f"(+{a - p:.1f} s) -> {a / p:.2f}x (target <= 1.3x)",
                flush=True,
            )
    return {"sizes": results}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
