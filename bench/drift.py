"""Evidently drift report on N rows x 20 columns (15 numeric, 5 categorical), reference vs current,
against scipy's two-sample KS (numeric) and chi-square (categorical) on the same columns, in the same run.

Each method runs in its own child process on the same seeded data, so its wall time and its peak
memory (peak RSS, reset once the data is built and the libraries imported, minus that RSS) are its own.
Measured:

* ``evidently``: DataDriftPreset as the monitor runs it (Evidently picks normed Wasserstein and
  Jensen-Shannon distance for > 1000 rows);
* ``evidently_ks``: the same preset forced to KS / chi-square, the same tests as the baseline;
* ``scipy``: ``scipy.stats.ks_2samp`` and ``chi2_contingency`` per column (the baseline);
* ``evidently_sample``: the preset on a random sample of ``--sample`` rows of each side (what the
  monitor does above ``AIRLOOP_DRIFT_SAMPLE_ROWS``, default 100 000), and whether its decision (which
  columns drifted, hence the share) matches the full run.

Target: the Evidently report under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd

NUMERIC, CATEGORICAL = 15, 5
METHODS = ("scipy", "evidently", "evidently_ks", "evidently_sample")
SHIFTED = ("num_00", "num_01", "num_02", "num_03", "cat_00")  # 5 of 20 columns move: share 0.25


def make_data(rows: int, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames; the current one has shifted the columns in SHIFTED."""
    cats = np.array(["a", "b", "c", "d", "e"])

    def frame(rng: np.random.Generator, shift: bool) -> pd.DataFrame:
        cols = {}
        for i in range(NUMERIC):
            name = f"num_{i:02d}"
            moved = shift and name in SHIFTED
            cols[name] = (
                rng.gamma(4.0, 10.0 * (1.3 if moved else 1.0), rows)
                if i % 2
                else rng.normal(0.5 if moved else 0.0, 1.0, rows)
            )
        for i in range(CATEGORICAL):
            name = f"cat_{i:02d}"
            p = [0.1, 0.1, 0.2, 0.3, 0.3] if shift and name in SHIFTED else [0.3, 0.3, 0.2, 0.1, 0.1]
            cols[name] = pd.Categorical(rng.choice(cats, rows, p=p))
        return pd.DataFrame(cols)

    return frame(np.random.default_rng([seed, 0]), False), frame(np.random.default_rng([seed, 1]), True)


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM (peak RSS) of this process, from /proc (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS, so the peak measured is the method's (Linux clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _evidently(ref: pd.DataFrame, cur: pd.DataFrame, **methods) -> dict:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    num = [c for c in ref if c.startswith("num")]
    cat = [c for c in ref if c.startswith("cat")]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snap = Report([DataDriftPreset(drift_share=0.2, **methods)], include_tests=True).run(
            current_data=Dataset.from_pandas(cur, data_definition=definition),
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
        )
    drifted, share, methods_used = [], None, set()
    for t in snap.dict()["tests"]:
        params = t["metric_config"]["params"]
        if params["type"].endswith("ValueDrift") and str(t["status"]).endswith("FAIL"):
            drifted.append(params["column"])
    for m in snap.dict()["metrics"]:
        if m["config"]["type"].endswith("DriftedColumnsCount"):
            share = m["value"]["share"]
        elif m["config"]["type"].endswith("ValueDrift"):
            methods_used.add(m["config"]["method"])
    return {"drifted": sorted(drifted), "share": share, "methods": sorted(methods_used)}


def _scipy(ref: pd.DataFrame, cur: pd.DataFrame) -> dict:
    from scipy.stats import chi2_contingency, ks_2samp

    drifted = []
    for c in ref:
        if c.startswith("num"):
            p = ks_2samp(ref[c].to_numpy(), cur[c].to_numpy()).pvalue
        else:
            table = pd.concat([ref[c].value_counts(), cur[c].value_counts()], axis=1).fillna(0).to_numpy()
            p = chi2_contingency(table).pvalue
        if p < 0.05:
            drifted.append(c)
    return {"drifted": sorted(drifted), "share": len(drifted) / ref.shape[1], "methods": ["ks", "chi-square"]}


def worker(method: str, rows: int, sample: int) -> dict:
    """Build the data, then time one method and measure its peak memory above the data's."""
    ref, cur = make_data(rows)
    if method == "evidently_sample":
        ref, cur = ref.sample(sample, random_state=0), cur.sample(sample, random_state=1)
    import evidently  # noqa: F401  (import cost is not the report's)
    import scipy.stats  # noqa: F401

    base = _status_mb("VmRSS")
    _reset_peak()
    t = time.perf_counter()
    if method == "scipy":
        out = _scipy(ref, cur)
    elif method == "evidently_ks":
        out = _evidently(ref, cur, num_method="ks", cat_method="chisquare")
    else:
        out = _evidently(ref, cur)
    seconds = time.perf_counter() - t
    return {**out, "seconds": seconds, "peak_mb": max(_status_mb("VmHWM") - base, 0.0)}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows on each side")
    parser.add_argument("--sample", type=int, default=100_000, help="rows per side for the sampled run")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.rows, args.sample)))
        return {}
    results = {}
    for method in args.methods.split(","):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        cmd = [sys.executable, __file__, "--worker", method, "--rows", str(args.rows), "--sample", str(args.sample)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[method] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results["scipy"]["seconds"] if "scipy" in results else None
    print(f"drift check: {args.rows:,} rows x {NUMERIC + CATEGORICAL} columns per side, {os.cpu_count()} cores")
    print(f"{'method':18} {'seconds':>8} {'x scipy':>8} {'peak MB':>8}  drifted columns (tests)")
    for name, r in results.items():
        ratio = f"{r['seconds'] / base:8.2f}" if base else f"{'-':>8}"
        print(
            f"{name:18} {r['seconds']:8.2f} {ratio} {r['peak_mb']:8.0f}  "
            f"{len(r['drifted'])}/20 share {r['share']:.2f} ({', '.join(r['methods'])})"
        )
    print(f"truly shifted: {', '.join(SHIFTED)}")
    full, sampled = results.get("evidently"), results.get("evidently_sample")
    if full and sampled:
        same = full["drifted"] == sampled["drifted"]
        print(
            f"sampling {min(args.sample, args.rows):,} rows per side: {sampled['seconds']:.2f} s, "
            f"same decision as the full run: {'yes' if same else 'NO: ' + ', '.join(sampled['drifted'])}"
        )
        results["same_decision_sampled"] = same
    results["rows"] = {"evidently": args.rows, "evidently_sample": min(args.sample, args.rows)}
    for name, label in (("evidently", "full data"), ("evidently_sample", "the monitor's default sample")):
        if name in results:
            met = "met" if results[name]["seconds"] < 60 else "MISSED"
            print(f"target, Evidently report under 60 s on {label}: {met} ({results[name]['seconds']:.1f} s)")
    return results


if __name__ == "__main__":
    main()
