"""Orchestration overhead: one nightly cycle (ingest → validate → materialize → score of one day)
run through Airflow (``airloop_daily`` with ``dag.test()``, parsing included) against the same stage
functions called in one plain Python process, on the same data. Each run is a fresh process (wall
time, interpreter start and imports included on both sides); the day's outputs are removed between
runs. Target: Airflow <= 1.3x plain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLAIN = (
    "from airloop.config import get_settings\n"
    "from airloop.features import materialize_features\n"
    "from airloop.ingest import ingest_batch\n"
    "from airloop.score import score_batch\n"
    "from airloop.validate import validate_batch\n"
    "s = get_settings()\n"
    f"ingest_batch(s, {stages.DAY!r}); validate_batch(s, {stages.DAY!r})\n"
    f"materialize_features(s, {stages.DAY!r}); score_batch(s, {stages.DAY!r})\n"
)
AIRFLOW = (
    "import sys, datetime\n"
    f"sys.path.insert(0, {str(ROOT / 'plugins')!r})\n"
    "from airloop_runner import _quiet, load_dags, run\n"
    "_quiet()\n"
    f"state = run(load_dags()['airloop_daily'], datetime.date.fromisoformat({stages.DAY!r}))\n"
    "assert state == 'success', state\n"
)


def _clean(home: Path) -> None:
    for zone in ("raw", "validated", "predictions"):
        shutil.rmtree(home / "lake" / zone / f"ds={stages.DAY}", ignore_errors=True)
    (home / "lake" / "features" / f"{stages.DAY}.parquet").unlink(missing_ok=True)


def _wall(code: str, env: dict[str, str], home: Path) -> float:
    _clean(home)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"run failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the measured day")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="airloop-bench-orch-") as tmp:
        home = Path(tmp) / "airloop"
        stages.prepare(home, args.rows, 2000)
        env = stages._env(home, args.rows)
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
        for _ in range(args.repeat):  # alternate, so drifting machine load hits both sides alike
            plain.append(_wall(PLAIN, env, home))
            airflow.append(_wall(AIRFLOW, env, home))
    p, a = statistics.median(plain), statistics.median(airflow)
    print(f"one day of {args.rows:,} rows, median of {args.repeat} fresh processes each")
    print(f"plain Python (4 stage calls)      {p:7.1f} s")
    print(f"Airflow dag.test(airloop_daily)   {a:7.1f} s  -> {a / p:.2f}x plain (target <= 1.3x)")
    return {"rows": args.rows, "plain_s": p, "airflow_s": a, "ratio": a / p}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
