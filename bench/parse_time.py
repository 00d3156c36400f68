"""DAG parse time, each figure from fresh processes: every DAG file parsed by Airflow's own DagBag
after ``import airflow`` and the DagBag module (what a DAG processor has loaded before it parses a
file), the whole ``dags/`` folder in one DagBag, and, for comparison, each file executed cold in a
process that has imported only ``airflow.sdk`` (modules the processor already holds are paid there).

Prints seconds and the ratio to the baseline (``import airflow.sdk``) measured in the same run.
Budget: 0.5 s per file, 2 s for all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASELINE = "import time; t=time.perf_counter(); import airflow.sdk; print(time.perf_counter()-t)"
PER_FILE = (
    "import time; from airflow.dag_processing.dagbag import DagBag; t=time.perf_counter(); "
    "b=DagBag(dag_folder={path!r}); assert b.dags and not b.import_errors, b.import_errors; "
    "print(time.perf_counter()-t)"
)
COLD = (
    "import time, importlib.util, airflow.sdk; t=time.perf_counter(); "
    "s=importlib.util.spec_from_file_location('d', {path!r}); m=importlib.util.module_from_spec(s); "
    "s.loader.exec_module(m); print(time.perf_counter()-t)"
)
BAG = (
    "import time; from airflow.dag_processing.dagbag import DagBag; t=time.perf_counter(); "
    "b=DagBag(dag_folder={folder!r}); assert not b.import_errors, b.import_errors; print(time.perf_counter()-t)"
)


ENV = {
    **os.environ,
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
}


def _time(code: str, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
        if out.returncode:
            raise RuntimeError(f"benchmark step failed:\n{out.stderr[-2000:]}")
        runs.append(float(out.stdout.split()[-1]))
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    base = _time(BASELINE, args.repeat)
    print(f"baseline: import airflow.sdk            {base:7.3f} s")
    results = {"baseline": base}
    print(f"{'file: DagBag parse (budget 0.5 s)':38s}  seconds   cold, after airflow.sdk only")
    for path in sorted((ROOT / "dags").glob("*.py")):
        secs = _time(PER_FILE.format(path=str(path)), args.repeat)
        cold = _time(COLD.format(path=str(path)), args.repeat)
        results[path.name] = secs
        results[f"{path.name} cold"] = cold
        flag = "" if secs <= 0.5 else "  OVER the 0.5 s budget"
        print(f"{path.name:38s} {secs:7.3f} s  ({secs / base:5.2f}x the airflow import)  {cold:7.3f} s{flag}")
    bag = _time(BAG.format(folder=str(ROOT / "dags")), args.repeat)
    results["dagbag"] = bag
    print(f"{'DagBag of dags/ (all files)':38s} {bag:7.3f} s  ({bag / base:5.2f}x){'' if bag <= 2 else '  OVER 2 s'}")
    return results


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"(bench took {time.perf_counter() - start:.1f} s)")
