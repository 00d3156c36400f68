"""Run every benchmark and write the figures to BENCHMARKS.md (machine, date, command, load).

``make bench`` runs this; ``--quick`` uses small sizes (what the smoke test runs). Only the block
between the ``BEGIN``/``END`` markers is replaced: the hand-written sections around it (before/after
records, explanations) are kept."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- bench/run_all.py: BEGIN generated block -->"
END = "<!-- bench/run_all.py: END generated block -->"


def _machine() -> str:
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    gib = int(mem.split()[1]) / 1024**2
    return f"{os.cpu_count()} cores, {gib:.0f} GiB, {platform.platform()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--sizes", default="10000,100000,1000000", help="stage sizes (rows of one day)")
    args = parser.parse_args(argv)
    import demo_breakdown
    import drift
    import feast_online
    import orchestration
    import parse_time
    import serving
    import stages
    import validation_throughput

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    q = args.quick
    runs = {
        "parse": (parse_time, ["--repeat", "1" if q else "3"]),
        "validation": (validation_throughput, ["--rows", "5000" if q else "1000000"]),
        "feast": (feast_online, ["--rows", "2000", "--lookups", "5"] if q else []),
        "drift": (drift, ["--rows", "3000", "--methods", "scipy,evidently"] if q else []),
        "stages": (stages, ["--sizes", "2000,4000" if q else args.sizes]),
        "orchestration": (orchestration, ["--rows", "2000", "--repeat", "1"] if q else []),
        "demo": (demo_breakdown, ["--days", "5" if q else "14"]),
        "serving": (serving, ["--seconds", "2" if q else "8"]),
    }
    r: dict = {}
    for name, (module, module_args) in runs.items():
        # each benchmark sees the environment run_all started with: the Feast bench sets
        # AIRLOOP_ONLINE_STORE=redis and AIRLOOP_HOME, which would otherwise carry into the next ones
        with mock.patch.dict(os.environ):
            r[name] = module.main(module_args)
    elapsed = time.perf_counter() - t0
    md = render(r, load_before, os.getloadavg(), elapsed, " ".join(["python", "bench/run_all.py", *(argv or [])]))
    out = Path(args.out)
    out.write_text(merge(out.read_text() if out.exists() else "", md))
    print(f"wrote {out}")
    return out


def merge(existing: str, block: str) -> str:
    """``existing`` with its generated block replaced by ``block`` (placed after the title if it has none)."""
    block = f"{BEGIN}\n{block}{END}\n"
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        return head + block + ("\n" + tail if tail else "")
    title, _, rest = existing.partition("\n") if existing.startswith("# ") else ("# Benchmarks", "", existing)
    return f"{title}\n\n{block}\n{rest.lstrip()}".rstrip() + "\n"


def render(r: dict, load_before: tuple, load_after: tuple, elapsed: float, command: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Latest full run (`make bench`)",
        "",
        f"Machine: {_machine()}. Date: {now}. Command: `{command}` ({elapsed / 60:.0f} min).",
        f"Load average at start / end: {load_before[0]:.1f} / {load_after[0]:.1f} (absolute times are noisy on "
        "a shared 2-core machine; each ratio compares against a baseline measured in the same run).",
        "",
        "| benchmark | figure | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    p = r["parse"]
    for name, secs in p.items():
        if name.endswith(".py"):
            cold = f" (cold after `airflow.sdk` only: {p[name + ' cold']:.2f} s)" if f"{name} cold" in p else ""
            lines.append(
                f"| DAG parse `{name}`, DagBag | {secs:.2f} s{cold} | `import airflow.sdk` {p['baseline']:.2f} s | "
                f"{secs / p['baseline']:.2f}x | <= 0.5 s |"
            )
    lines.append(f"| DagBag of `dags/` | {p['dagbag']:.2f} s | | | <= 2 s |")
    v = r["validation"]
    lines.append(
        f"| GX suite, {v['rows']:,} rows | {v['gx_s']:.2f} s | hand-written pandas checks {v['pandas_s']:.2f} s | "
        f"{v['ratio']:.2f}x | <= 3x |"
    )
    f = r["feast"]
    for k, val in f.items():
        lines.append(f"| Feast `{k}` | {val:,.1f} | | | |")
    dr = r.get("drift", {})
    base = dr.get("scipy", {}).get("seconds")
    for name in ("evidently", "evidently_sample"):
        if name in dr and base:
            m = dr[name]
            rows = dr.get("rows", {}).get(name)
            lines.append(
                f"| drift report `{name}` ({rows:,} rows x 20 per side) | {m['seconds']:.1f} s, "
                f"peak +{m['peak_mb']:.0f} MB | scipy KS/chi-square {base:.1f} s | "
                f"{m['seconds'] / base:.1f}x | < 60 s |"
            )
    st = r["stages"]
    for stage, by_size in st["stages"].items():
        for n, m in by_size.items():
            base = ""
            ratio = ""
            if stage == "score":
                base = f"bare predict {n / m['bare_predict_s']:,.0f} rows/s"
                ratio = f"{m['bare_predict_s'] / m['seconds']:.2f}x"
            lines.append(
                f"| {stage}, {int(n):,} rows | {m['seconds']:.2f} s ({int(n) / m['seconds']:,.0f} rows/s), peak RSS "
                f"{m['peak_rss_mb']:.0f} MB (+{m['peak_rss_mb'] - m['base_rss_mb']:.0f} over imports) | {base} | "
                f"{ratio} | {'>= 0.5x' if stage == 'score' else ''} |"
            )
    for stage, e in st.get("exponents", {}).items():
        lines.append(f"| growth exponent, {stage} | {e:.2f} | | | 1 (linear) |")
    for o in r["orchestration"]["sizes"]:
        for kind in ("cold", "warm"):
            lines.append(
                f"| nightly cycle via Airflow, {o['rows']:,} rows, {kind} | {o[f'airflow_{kind}_s']:.1f} s | "
                f"plain Python {o[f'plain_{kind}_s']:.1f} s | {o[f'{kind}_ratio']:.2f}x | <= 1.3x |"
            )
    for n, res in (r.get("serving") or {}).items():
        if not isinstance(n, int):
            continue
        a, b = res["airloop"], res["baseline"]
        paced, plain = res["airloop_paced"], res["airloop_plain"]
        target = "p99 < 10 ms at 200 req/s" if n == 1 else "p99 < 25 ms"
        lines.append(
            f"| `airloop serve`, {n} entit{'y' if n == 1 else 'ies'}/request | {a['rps']:,.0f} req/s (p50/p95/p99 "
            f"{a['p50']:.1f}/{a['p95']:.1f}/{a['p99']:.1f} ms, load {a['load']:.1f}); paced {paced['rps']:,.0f} "
            f"req/s: p99 {paced['p99']:.1f} ms; fast paths off {plain['rps']:,.0f} req/s, p99 {plain['p99']:.1f} ms "
            f"| `feast serve` + `mlflow models serve` {b['rps']:,.0f} req/s (p99 {b['p99']:.1f} ms) "
            f"| {res['throughput_ratio']:.2f}x | {target}; >= 3x |"
        )
    d = r["demo"]
    lines.append(f"| {d['days']}-day demo, wall | {d['wall_s']:.0f} s | | | |")
    total = sum(d["stage_seconds"].values()) or 1
    for name, secs in list(d["stage_seconds"].items())[:8]:
        lines.append(f"| demo task `{name}` (total) | {secs:.1f} s ({secs / total:.0%}) | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
