"""GX validation throughput: the full generated suite on one day of N rows (whole batch, no sampling)
against hand-written pandas checks of the same expectations, measured in the same run.

Target: GX within 3x of the pandas baseline.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date

import pandas as pd

DAY = "2026-01-05"


def pandas_checks(df: pd.DataFrame, spec, ds: str) -> bool:
    """The generated suite's expectations written by hand in pandas (the baseline)."""
    start = pd.Timestamp(ds, tz="UTC")
    ok = list(df.columns) == spec.columns or set(df.columns) == set(spec.columns)
    ok &= spec.rows_per_day.min <= len(df) <= spec.rows_per_day.max
    ok &= not df.duplicated([spec.entity, spec.timestamp]).any()
    ok &= df[[spec.entity, spec.timestamp, spec.label]].notna().all().all()
    ts = df[spec.timestamp]
    ok &= bool(((ts >= start) & (ts < start + pd.Timedelta(days=1))).all())
    ok &= bool(df[spec.label].isin([0, 1]).all())
    for f in spec.features:
        col = df[f.name]
        ok &= col.isna().mean() <= f.max_missing
        if f.warn_missing is not None:
            _ = col.isna().mean() <= f.warn_missing
        if f.dtype == "category":
            ok &= bool(col.dropna().isin(f.categories).all())
        else:
            ok &= pd.api.types.is_numeric_dtype(col)
            ok &= bool(col.dropna().between(f.min, f.max).all())
    return bool(ok)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    os.environ.setdefault("AIRLOOP_HOME", tempfile.mkdtemp(prefix="airloop-bench-"))
    os.environ["AIRLOOP_CUSTOMERS"] = os.environ["AIRLOOP_ROWS_PER_DAY"] = str(args.rows)
    from airloop.config import get_settings
    from airloop.ingest import coerce
    from airloop.simulate import simulate_day
    from airloop.validate import check_frame

    settings = get_settings()
    df, _ = coerce(simulate_day(date.fromisoformat(DAY), settings), settings.spec)
    check_frame(settings, df.head(1000), DAY)  # warm-up: imports and GX context set-up

    t = time.perf_counter()
    base_ok = pandas_checks(df, settings.spec, DAY)
    base = time.perf_counter() - t
    t = time.perf_counter()
    gx_ok = check_frame(settings, df, DAY)["success"]
    gx_s = time.perf_counter() - t
    assert base_ok and gx_ok, "both must pass on a clean simulated day"
    n = len(df)
    print(f"rows: {n:,}  expectations: the full generated suite")
    print(f"pandas hand-written checks  {base:7.2f} s  {n / base:12,.0f} rows/s")
    print(f"GX suite (whole batch)      {gx_s:7.2f} s  {n / gx_s:12,.0f} rows/s")
    print(f"ratio GX / pandas: {gx_s / base:.2f}x (target <= 3x)")
    return {"rows": n, "pandas_s": base, "gx_s": gx_s, "ratio": gx_s / base}


if __name__ == "__main__":
    main()
