"""End to end: the demo's simulated days through the real DAGs (``dag.test()``), wall time and the
time of each DAG task summed over all runs (from Airflow's task instances), slowest first."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="airloop-bench-demo-") as tmp:
        env = {
            **os.environ,
            "AIRLOOP_HOME": str(Path(tmp) / "airloop"),
            "AIRFLOW_HOME": str(Path(tmp) / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "PYTHONWARNINGS": "ignore",
        }
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
        out = subprocess.run(
            [str(Path(sys.executable).with_name("airloop")), "demo", "--days", str(args.days)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise RuntimeError(f"demo failed:\n{out.stderr[-3000:]}")
        summary = json.loads(Path(out.stdout.strip().splitlines()[-1]).read_text())
    stages = summary["stage_seconds"]
    total = sum(stages.values())
    print(f"{args.days}-day demo: {summary['wall_seconds']:.0f} s wall; task time by DAG task (share of task time):")
    for name, secs in stages.items():
        print(f"  {name:40s} {secs:7.1f} s  {secs / total:6.1%}")
    return {"days": args.days, "wall_s": summary["wall_seconds"], "stage_seconds": stages}


if __name__ == "__main__":
    main()
