"""Online-store write throughput into SQLite and Redis, same rows, same run: airloop's columnar writer
(``airloop.online_write``), Feast's ``write_to_online_store`` (10 k-row batches, the path it replaces), and
the same key/values written with the bare client (sqlite3 executemany, redis-py pipeline). Each writer
reads the day's feature Parquet batch by batch, as ``materialize_features`` does, into an emptied store.
The columnar write runs in a process of its own, at the day's size and at a tenth of it, for its peak memory
apart (RSS peak during the write over the RSS before it). Plus Redis online lookup latency (p50/p99) for 1
and 100 entities. Targets: airloop into Redis >= 100 k
rows/s and >= 8x Feast, into SQLite >= 50 k rows/s; p99 < 10 ms for 100 entities.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

DAY = datetime(2026, 1, 5, tzinfo=UTC)
REDIS_DB = 8


def feature_rows(spec, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({spec.entity: np.arange(n, dtype="int64"), spec.timestamp: DAY + timedelta(hours=1)})
    for f in spec.features:
        if f.dtype == "category":
            df[f.name] = rng.choice(f.categories, n)
        elif f.dtype == "int":
            df[f.name] = rng.integers(int(f.min), int(f.max) + 1, n)
        else:
            df[f.name] = rng.uniform(f.min, f.max, n)
    for a in spec.aggregates:
        df[a.name] = rng.uniform(0, 10, n)
    return df


def _empty_store(settings) -> None:
    if settings.online_store == "redis":
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    else:
        (settings.feast_dir / "online.db").unlink(missing_ok=True)


def _write_online(settings, writer: str, path) -> float:
    """Seconds to load the feature file ``path`` into an emptied online store with ``writer`` (airloop|feast)."""
    from airloop.features import apply_repo
    from airloop.online_write import online_writer
    from airloop.storage import iter_batches

    _empty_store(settings)
    store = apply_repo(settings)
    chosen = online_writer(settings.model_copy(update={"online_writer": writer}), store)
    t = time.perf_counter()
    for batch in iter_batches(path, chosen.batch_rows):
        chosen.write(batch)
    chosen.close()
    return time.perf_counter() - t


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _airloop_child(path: str) -> None:
    """In a process of its own: the columnar write of ``path`` into an emptied store; prints its seconds and the
    peak RSS during the write over the RSS before it (the peak is reset after imports and setup: Linux
    ``clear_refs``)."""
    import json

    from airloop.config import get_settings
    from airloop.features import apply_repo
    from airloop.online_write import online_writer
    from airloop.storage import iter_batches

    settings = get_settings()
    _empty_store(settings)
    writer = online_writer(settings.model_copy(update={"online_writer": "airloop"}), apply_repo(settings))
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    t = time.perf_counter()
    for batch in iter_batches(path, writer.batch_rows):
        writer.write(batch)
    writer.close()
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "peak_mb": (_status_kib("VmHWM") - before) / 1024}))


def _airloop_apart(path) -> dict:
    """``_airloop_child`` of ``path`` in a fresh interpreter (this process's environment)."""
    import json
    import subprocess
    import sys

    code = f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import feast_online; "
    code += f"feast_online._airloop_child({str(path)!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _sqlite_baseline(rows: pd.DataFrame, cols: list[str], path: str) -> float:
    data = [(str(k), c, str(v)) for c in cols for k, v in zip(rows.iloc[:, 0], rows[c], strict=True)]
    t = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE kv (entity_key TEXT, feature_name TEXT, value TEXT, PRIMARY KEY(entity_key, feature_name))"
    )
    with conn:
        conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", data)
    conn.close()
    return time.perf_counter() - t


def _redis_baseline(rows: pd.DataFrame, cols: list[str]) -> float:
    import redis

    r = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    r.flushdb()
    records = rows[cols].astype(str).to_dict("records")
    keys = rows.iloc[:, 0].astype(str).tolist()
    t = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, (k, rec) in enumerate(zip(keys, records, strict=True)):
        pipe.hset(f"baseline:{k}", mapping=rec)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    elapsed = time.perf_counter() - t
    r.flushdb()
    return elapsed


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args(argv)
    home = tempfile.mkdtemp(prefix="airloop-bench-feast-")
    os.environ["AIRLOOP_HOME"] = home
    from airloop.config import get_settings

    settings = get_settings()
    spec = settings.spec
    rows = feature_rows(spec, args.rows)
    cols = spec.model_features
    out: dict[str, float] = {"rows": args.rows}

    from airloop import lake
    from airloop.storage import write_parquet

    day = write_parquet(rows, lake.data_file(settings, lake.FEATURES, "2026-01-05"))
    small = write_parquet(rows.iloc[: args.rows // 10], Path(home) / "small.parquet")
    for store_name in ("sqlite", "redis"):
        if store_name == "redis":
            os.environ.update(AIRLOOP_ONLINE_STORE="redis", AIRLOOP_REDIS_CONNECTION=f"127.0.0.1:6379,db={REDIS_DB}")
            settings = get_settings()
        feast_s = _write_online(settings, "feast", day)
        tenth = _airloop_apart(small)
        full = _airloop_apart(day)  # leaves the store loaded: the lookups read it
        airloop_s = full["seconds"]
        if store_name == "sqlite":
            bare_s = _sqlite_baseline(rows, cols, os.path.join(home, "baseline.db"))
        else:
            bare_s = _redis_baseline(rows, cols)
        out.update(
            {
                f"airloop_{store_name}_rps": args.rows / airloop_s,
                f"feast_{store_name}_rps": args.rows / feast_s,
                f"{store_name}_baseline_rps": args.rows / bare_s,
                f"airloop_over_feast_{store_name}": feast_s / airloop_s,
                f"airloop_{store_name}_peak_mb": full["peak_mb"],
                f"airloop_{store_name}_peak_mb_tenth": tenth["peak_mb"],
            }
        )
    import redis

    from airloop.features import get_store

    store = get_store(settings)
    service = store.get_feature_service(settings.spec.feature_service_name)
    rng = np.random.default_rng(1)
    for n in (1, 100):
        lat = []
        for _ in range(args.lookups):
            ids = rng.choice(args.rows, n, replace=False)
            t = time.perf_counter()
            store.get_online_features(features=service, entity_rows=[{spec.entity: int(i)} for i in ids]).to_dict()
            lat.append((time.perf_counter() - t) * 1000)
        out[f"lookup_{n}_p50_ms"], out[f"lookup_{n}_p99_ms"] = np.percentile(lat, [50, 99])
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()

    print(f"rows: {args.rows:,} entities x {len(cols)} features")
    for store_name in ("sqlite", "redis"):
        a, f, b = (out[f"{k}_rps"] for k in (f"airloop_{store_name}", f"feast_{store_name}", f"{store_name}_baseline"))
        print(
            f"materialize {store_name}: airloop {a:,.0f} rows/s | feast {f:,.0f} rows/s | bare {b:,.0f} rows/s | "
            f"airloop/feast {a / f:.1f}x"
        )
    for store_name in ("sqlite", "redis"):
        tenth, full = out[f"airloop_{store_name}_peak_mb_tenth"], out[f"airloop_{store_name}_peak_mb"]
        print(
            f"airloop writer {store_name} peak memory over its start: {tenth:,.0f} MB at {args.rows // 10:,} rows, "
            f"{full:,.0f} MB at {args.rows:,} rows"
        )
    for n in (1, 100):
        p50, p99 = out[f"lookup_{n}_p50_ms"], out[f"lookup_{n}_p99_ms"]
        print(f"Redis lookup {n:3d} entities: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return out


if __name__ == "__main__":
    main()
