"""Stage scaling: wall time and peak RSS of ingest, validate, materialize and score for one day of
N rows, each stage in a fresh process (imports, the stages' lazy ones included, excluded from the
time, included in the RSS and reported separately); the growth exponent of each stage over the
sizes; and batch scoring's throughput (feature read + predict + write) against a bare ``predict`` on
the same rows in memory.

History: 5 small days train and promote a champion; the measured day is day 6 with N rows.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from airloop import lake

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "validate", "materialize", "score")
OFFLINE = "offline_features"  # the features stage without Feast's online write (for sizes too big for it)
START = date(2026, 1, 1)
DAY = (START + timedelta(days=5)).isoformat()
# Modules a stage imports on first use: a task's process pays them once, like any import; bare
# ``predict`` (the scoring baseline) has them loaded too. skops.io alone costs ~2.7 s (its trusted
# types list imports every scikit-learn estimator), MLflow's SQL stores ~1.6 s.
WARM_IMPORTS = {
    "score": [
        "mlflow.sklearn",
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store",
        "pyarrow",
        "skops.io",
        "sklearn",
    ],
    "materialize": ["feast", "feast.infra.offline_stores.dask", "feast.infra.online_stores.sqlite"],
}


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _offline_features(settings: object, ds: str) -> dict:
    from airloop.features import write_features

    return {"rows": write_features(settings, ds)[0]}


def worker(stage: str) -> dict:
    """Run one stage on DAY in this process; imports happen before the clock starts."""
    from airloop.config import get_settings
    from airloop.features import materialize_features
    from airloop.ingest import ingest_batch
    from airloop.score import score_batch
    from airloop.validate import validate_batch

    s = get_settings()
    fn = {"ingest": ingest_batch, "validate": validate_batch, "materialize": materialize_features}.get(stage)
    if stage == OFFLINE:
        fn = _offline_features
    for module in WARM_IMPORTS.get(stage, ()):  # import cost outside the clock, lazy imports included
        importlib.import_module(module)
    if stage == "validate":
        from airloop.validate import _import_gx

        _import_gx()
    base = _rss_mb()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM): a fork inherits its parent's
    t0 = time.perf_counter()
    out = score_batch(s, DAY) if stage == "score" else fn(s, DAY)
    seconds = time.perf_counter() - t0
    result = {"stage": stage, "seconds": seconds, "rows": out["rows"], "base_rss_mb": base}
    result["peak_rss_mb"] = max(_rss_mb("VmHWM"), base)
    if stage == "score":  # the baseline: bare predict on the same rows, already in memory
        import pandas as pd

        from airloop.model import predict
        from airloop.registry import CHAMPION, load_model, version_by_alias

        feats = pd.read_parquet(lake.data_file(s, "features", DAY), columns=s.spec.model_features)
        model = load_model(s, version_by_alias(s, CHAMPION).version)
        t0 = time.perf_counter()
        predict(s, model, feats)
        result["bare_predict_s"] = time.perf_counter() - t0
    return result


def _env(home: Path, rows: int) -> dict[str, str]:
    return {
        **os.environ,
        "AIRLOOP_HOME": str(home),
        "AIRLOOP_CUSTOMERS": str(max(rows, 3000)),
        "AIRLOOP_ROWS_PER_DAY": str(rows),
        "AIRLOOP_SKEW_SAMPLE": "50",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONWARNINGS": "ignore",
    }


def prepare(home: Path, rows: int, history_rows: int) -> None:
    """Five small days and a champion (forced: with a large population and small days the gate may
    rightly refuse it, but the bench needs a model), then the landing batch of the big day."""
    code = (
        "from datetime import date, timedelta\n"
        "from airloop.config import get_settings\n"
        "from airloop.features import materialize_features\n"
        "from airloop.ingest import ingest_batch\n"
        "from airloop.labels import collect_labels\n"
        "from airloop.promote import evaluate_gate\n"
        "from airloop.simulate import simulate\n"
        "from airloop.train import train_model\n"
        "from airloop.validate import validate_batch\n"
        "s = get_settings()\n"
        f"simulate(date({START.year}, {START.month}, {START.day}), 5, s)\n"
        "for i in range(5):\n"
        f"    ds = (date({START.year}, {START.month}, {START.day}) + timedelta(days=i)).isoformat()\n"
        "    ingest_batch(s, ds); validate_batch(s, ds); materialize_features(s, ds)\n"
        "collect_labels(s, ds)\n"  # the labels of days 1-4 (the feed's delay): 4 labelled days to train on
        "v = train_model(s, ds)['version']\n"
        "d = evaluate_gate(s, v, force_reason='bench set-up: a champion to score with')\n"
        "assert d['decision'] in ('promoted', 'forced'), d['reason']\n"
    )
    env = _env(home, history_rows)
    env["AIRLOOP_CUSTOMERS"] = str(max(rows, 3000))  # one population for history and the big day
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"preparing the history failed:\n{out.stderr[-3000:]}")
    big = (
        "from datetime import date\nfrom airloop.config import get_settings\n"
        "from airloop.simulate import write_landing\n"
        f"write_landing(date.fromisoformat({DAY!r}), get_settings())\n"
    )
    subprocess.run([sys.executable, "-c", big], check=True, env=_env(home, rows))


def run_stage(home: Path, rows: int, stage: str) -> dict:
    env = _env(home, rows)
    if stage == "score":  # the batch path alone: the skew check's fixed cost is an online-store probe
        env["AIRLOOP_SKEW_SAMPLE"] = "0"
    out = subprocess.run(
        [sys.executable, __file__, "--worker", stage],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"{stage} at {rows} rows failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """Slope of log(time) against log(rows): 1 is linear."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="rows of the measured day")
    parser.add_argument("--history-rows", type=int, default=2000, help="rows per history day")
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="stages to measure; without materialize, the day's offline features are written unmeasured "
        "(no Feast online write), so scoring can be measured at sizes the SQLite online store cannot take",
    )
    parser.add_argument("--worker", choices=[*STAGES, OFFLINE], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return {}
    sizes = [int(x) for x in args.sizes.split(",")]
    chosen = [s for s in STAGES if s in args.stages.split(",")]
    table: dict[str, dict[int, dict]] = {s: {} for s in chosen}
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="airloop-bench-stages-") as tmp:
            home = Path(tmp) / "airloop"
            prepare(home, rows, args.history_rows)
            for stage in chosen:
                if stage == "score" and "materialize" not in chosen:
                    off = run_stage(home, rows, OFFLINE)
                    print(
                        f"{'(offline features, unmeasured stage)':>34s} {off['seconds']:8.2f} s  peak RSS "
                        f"{off['peak_rss_mb']:7.0f} MB (+{off['peak_rss_mb'] - off['base_rss_mb']:.0f} over imports)",
                        flush=True,
                    )
                r = run_stage(home, rows, stage)
                table[stage][rows] = r
                extra = ""
                if stage == "score":
                    ratio = r["bare_predict_s"] / r["seconds"]
                    extra = (
                        f"  {rows / r['seconds']:,.0f} rows/s; bare predict {rows / r['bare_predict_s']:,.0f} rows/s"
                    )
                    extra += f"  -> {ratio:.2f}x of bare (target >= 0.5x)"
                print(
                    f"{stage:12s} {rows:>10,} rows {r['seconds']:8.2f} s  peak RSS {r['peak_rss_mb']:7.0f} MB "
                    f"(+{r['peak_rss_mb'] - r['base_rss_mb']:.0f} over imports){extra}",
                    flush=True,
                )
    result = {"sizes": sizes, "stages": table}
    if len(sizes) > 1:
        result["exponents"] = {s: exponent(sizes, [table[s][n]["seconds"] for n in sizes]) for s in chosen}
        print("growth exponent (1 = linear): " + ", ".join(f"{s} {e:.2f}" for s, e in result["exponents"].items()))
    return result


if __name__ == "__main__":
    main()
