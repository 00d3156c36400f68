"""The columnar online writer against Feast's own ``write_to_online_store``, on real stores (a SQLite file and the
Redis at 127.0.0.1:6379, db 9): seeded random frames of every dtype the spec allows, written by each writer into
an emptied store in turn; what Feast reads back (values and event timestamps) and the raw stored bytes (Redis
hashes, SQLite rows) must be identical. Plus: an older write never replaces newer Redis values, and the guard
falls back to Feast with one log line where its test does not cover the configuration."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

REDIS_DB = 9  # this test's own db; only it is flushed
SEEDS = range(48)  # 200 seeds passed once (08:32, 2026-12-03); 48 keep the test near 20 s
BASE = datetime(2026, 1, 5, tzinfo=UTC)
WORDS = ["basic", "", "ü", "日本語", "premium 🚀", "a,b", "Ωmega", "x" * 300, "null", "0"]
SPEC = """
name: prop
task: binary_classification
entity: eid
entity_dtype: {dtype}
timestamp: ts
label: y
features:
  - {{name: i1, dtype: int, min: 0, max: 10}}
  - {{name: i2, dtype: int, min: 0, max: 10}}
  - {{name: f1, dtype: float, min: 0, max: 1}}
  - {{name: f2, dtype: float, min: 0, max: 1}}
  - {{name: c1, dtype: category, categories: [basic, premium]}}
  - {{name: c2, dtype: category, categories: [basic, premium]}}
aggregates:
  - {{name: n_7d, column: eid, fn: count, window_days: 7}}
"""


def _redis_up() -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        message = "Redis is not running on 127.0.0.1:6379"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request):
    if request.param == "redis":
        _redis_up()
    return request.param


def _settings(tmp_path, monkeypatch, kind: str, dtype: str, **env: str):
    from airloop.config import get_settings

    spec = tmp_path / "prop.yaml"
    spec.write_text(SPEC.format(dtype=dtype))
    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRLOOP_SPEC_PATH", str(spec))
    monkeypatch.setenv("AIRLOOP_ONLINE_STORE", kind)
    monkeypatch.setenv("AIRLOOP_REDIS_CONNECTION", f"127.0.0.1:6379,db={REDIS_DB}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return get_settings()


def _ints(rng, n: int, nulls: bool) -> pa.Array:
    bound = 2**62 if nulls else 2**63 - 1  # through float64 (a null column), Feast cannot hold more
    pool = np.array([0, 1, -1, 7, bound, -bound, 2**31, -(2**31) - 1, 2**53 + 1], dtype=np.int64)
    values = np.where(rng.random(n) < 0.5, rng.choice(pool, n), rng.integers(-1000, 1000, n))
    if not nulls:
        if rng.random() < 0.3:
            values[0] = -(2**63)
        return pa.array(values, pa.int64())
    return pa.array(values, pa.int64(), mask=rng.random(n) < 0.3)


def _floats(rng, n: int) -> pa.Array:
    pool = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e308, 5e-324, -1.5, 1e16, 0.1])
    values = np.where(rng.random(n) < 0.4, rng.choice(pool, n), rng.normal(0, 1e3, n))
    return pa.array(values, pa.float64(), mask=rng.random(n) < 0.2 if rng.random() < 0.7 else None)


def _strings(rng, n: int) -> pa.Array:
    values = [WORDS[i] for i in rng.integers(0, len(WORDS), n)]
    array = pa.array([None if m else v for v, m in zip(values, rng.random(n) < 0.25, strict=True)], pa.string())
    return array.dictionary_encode() if rng.random() < 0.5 else array


def _frame(rng, dtype: str, n: int, ids: np.ndarray, shift: timedelta = timedelta()) -> pa.Table:
    """``n`` rows of random entities from ``ids`` (repeats and ties included) at random instants (ns)."""
    pick = ids[rng.integers(0, len(ids), n)]
    unit = rng.choice([1, 1000, 10**9], n)  # ns, whole us, whole seconds
    offsets = rng.integers(0, 86_400 * 10**9, n) // unit * unit
    ts = np.datetime64(BASE.replace(tzinfo=None) + shift, "ns") + offsets.astype("timedelta64[ns]")
    if rng.random() < 0.3:
        ts[: n // 2] = ts[0]  # many rows of one instant
    columns = {
        "eid": pa.array(pick, pa.int64() if dtype == "int" else pa.string()),
        "ts": pa.array(ts, pa.timestamp("ns", tz="UTC")),
        "i1": _ints(rng, n, nulls=False),
        "i2": _ints(rng, n, nulls=True),
        "f1": _floats(rng, n),
        "f2": _floats(rng, n),
        "c1": _strings(rng, n),
        "c2": _strings(rng, n),
        "n_7d": pa.array(rng.integers(0, 50, n).astype(np.float64)),
    }
    if rng.random() < 0.15:  # every feature null: Feast writes nothing
        for name in ("i1", "i2", "f1", "f2", "c1", "c2", "n_7d"):
            columns[name] = pa.nulls(n, columns[name].type if name != "i1" else pa.int64())
    return pa.table(columns)


def _entity_pool(rng, dtype: str) -> np.ndarray:
    if dtype == "int":
        extremes = np.array([0, -1, 2**63 - 1, -(2**63), 2**40], dtype=np.int64)
        return np.concatenate([extremes, rng.integers(-50, 50, 40)])
    return np.array(["", "a", "ü", "日本", "🚀x", "0", "-1", "a b", *[f"id{i}" for i in range(30)]], dtype=object)


def _batches(seed: int, dtype: str) -> tuple[list[pa.Table], np.ndarray]:
    """A few consecutive writes of one seed: newer and older days, overlapping entities."""
    rng = np.random.default_rng(seed)
    ids = _entity_pool(rng, dtype)
    shifts = [timedelta(days=int(d)) for d in rng.integers(-2, 3, rng.integers(1, 4))]
    return [_frame(rng, dtype, int(rng.integers(1, 120)), ids, s) for s in shifts], ids


def _stored(settings) -> list:
    """Everything in the store, in a fixed order."""
    if settings.online_store == "redis":
        import redis

        r = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        return sorted((k, sorted(r.hgetall(k).items())) for k in r.keys())
    conn = sqlite3.connect(settings.feast_dir / "online.db")
    rows = conn.execute(
        f'SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts FROM "airloop_'
        f'{settings.spec.feature_view_name}" ORDER BY entity_key, feature_name'
    ).fetchall()
    conn.close()
    return rows


def _empty(settings) -> None:
    if settings.online_store == "redis":
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    else:
        with sqlite3.connect(settings.feast_dir / "online.db") as conn:
            conn.execute(f'DELETE FROM "airloop_{settings.spec.feature_view_name}"')


def _read(store, settings, ids) -> dict:
    spec = settings.spec
    features = [f"{spec.feature_view_name}:{name}" for name in spec.model_features]
    rows = [{spec.entity: spec.key(i)} for i in ids]
    return store.get_online_features(features=features, entity_rows=rows).to_dict(include_event_timestamps=True)


@pytest.mark.parametrize("dtype", ["int", "string"])
def test_columnar_writer_stores_what_feast_stores(tmp_path, monkeypatch, store_kind, dtype):
    from airloop.features import apply_repo
    from airloop.online_write import ColumnarWriter, FeastWriter, online_writer

    settings = _settings(tmp_path, monkeypatch, store_kind, dtype)
    store = apply_repo(settings)
    ours = online_writer(settings, store)
    assert isinstance(ours, ColumnarWriter)
    feast = FeastWriter(store, settings.spec.feature_view_name)
    compared = 0
    try:
        for seed in SEEDS:
            batches, ids = _batches(seed, dtype)
            results = []
            for writer in (feast, ours):
                _empty(settings)
                for batch in batches:
                    writer.write(batch)
                results.append((_stored(settings), _read(store, settings, ids)))
            (feast_bytes, feast_read), (our_bytes, our_read) = results
            assert our_bytes == feast_bytes, f"seed {seed}: stored bytes differ"
            assert repr(our_read) == repr(feast_read), f"seed {seed}: values read back differ"
            compared += len(feast_bytes)
    finally:
        ours.close()
        _empty(settings)
    assert compared > 0


def test_an_older_write_does_not_replace_newer_redis_values(tmp_path, monkeypatch):
    _redis_up()
    from airloop.features import apply_repo
    from airloop.online_write import online_writer

    settings = _settings(tmp_path, monkeypatch, "redis", "int", AIRLOOP_ONLINE_WRITER="airloop")
    store = apply_repo(settings)
    writer = online_writer(settings, store)
    _empty(settings)

    def day(ts: datetime, value: float) -> pa.Table:
        return pa.table(
            {
                "eid": pa.array([1, 2], pa.int64()),
                "ts": pa.array([ts, ts], pa.timestamp("us", tz="UTC")),
                **{name: pa.array([3, 3]) for name in ("i1", "i2")},
                **{name: pa.array([value, value]) for name in ("f1", "f2", "n_7d")},
                **{name: pa.array(["basic", "basic"]) for name in ("c1", "c2")},
            }
        )

    try:
        writer.write(day(BASE + timedelta(days=1), 2.0))
        writer.write(day(BASE, 1.0))  # a backfill of the day before
        writer.write(day(BASE + timedelta(days=1), 3.0))  # the same instant again: Feast keeps the first
        read = _read(store, settings, [1, 2])
        assert read["f1"] == [2.0, 2.0]
        assert read["f1__ts"] == [int((BASE + timedelta(days=1)).timestamp())] * 2
        writer.write(day(BASE + timedelta(days=2), 4.0))
        assert _read(store, settings, [1, 2])["f1"] == [4.0, 4.0]
    finally:
        writer.close()
        _empty(settings)


@pytest.mark.parametrize(
    "order",
    [
        [(2, 0), (2, 1), (2, 2), (1, 0), (1, 1), (1, 2)],  # the newer day first (a backfill after it)
        [(1, 0), (2, 0), (2, 1), (1, 1), (1, 2), (2, 2)],  # the two runs' mapped tasks interleaved
        [(1, 2), (1, 1), (1, 0), (2, 2), (2, 1), (2, 0)],
    ],
    ids=["newer-first", "interleaved", "older-first"],
)
def test_two_days_written_bucket_by_bucket_in_any_order_leave_the_newest_values(
    tmp_path, monkeypatch, store_kind, order
):
    """The daily DAG's mapped online write: each (day, bucket) task writes its bucket of its day and of every
    newer day in the features zone, oldest first; whatever the order of the tasks, Feast reads each entity's
    newest day, and the buckets together wrote every row of the listed days once."""
    from airloop import lake
    from airloop.features import apply_repo, write_online_bucket
    from airloop.storage import write_parquet

    settings = _settings(tmp_path, monkeypatch, store_kind, "int", AIRLOOP_ONLINE_WRITER="airloop")
    days = {1: (BASE, range(0, 60), 1.0), 2: (BASE + timedelta(days=1), range(30, 90), 2.0)}
    for day, (ts, ids, value) in days.items():
        n = len(ids)
        frame = pa.table(
            {
                "eid": pa.array(list(ids), pa.int64()),
                "ts": pa.array([ts + timedelta(hours=1)] * n, pa.timestamp("us", tz="UTC")),
                **{name: pa.array([day] * n, pa.int64()) for name in ("i1", "i2")},
                **{name: pa.array([value] * n) for name in ("f1", "f2", "n_7d")},
                **{name: pa.array(["basic" if day == 1 else "premium"] * n) for name in ("c1", "c2")},
            }
        ).to_pandas()
        write_parquet(frame, lake.data_file(settings, lake.FEATURES, ts.date().isoformat()))
    store = apply_repo(settings)
    _empty(settings)
    try:
        written = {}
        for day, bucket in order:
            result = write_online_bucket(settings, days[day][0].date().isoformat(), bucket, 3)
            written[(day, bucket)] = result["rows"]
        assert sum(rows for (day, _), rows in written.items() if day == 2) == 60  # day 2 only
        assert sum(rows for (day, _), rows in written.items() if day == 1) == 120  # days 1 and 2
        assert all(rows for rows in written.values()), f"a bucket wrote nothing: {written}"
        read = _read(store, settings, range(90))
        newest = [1.0] * 30 + [2.0] * 60
        assert read["f1"] == newest and read["i1"] == [int(v) for v in newest]
        assert read["c2"] == ["basic"] * 30 + ["premium"] * 60
        stamps = [int((days[int(v)][0] + timedelta(hours=1)).timestamp()) for v in newest]
        assert read["f1__ts"] == stamps
    finally:
        _empty(settings)


def test_the_guard_falls_back_to_feast_with_one_log_line(tmp_path, monkeypatch, caplog):
    """Entity key serialization version 2 is not covered: ``auto`` writes through Feast and says why in one
    line; ``airloop`` refuses; the rows are stored either way."""
    from airloop.features import apply_repo, online_features
    from airloop.online_write import FeastWriter, online_writer

    repo = tmp_path / "repo"
    shutil.copytree(settings_repo(), repo)
    yaml = repo / "feature_store.yaml"
    yaml.write_text(
        yaml.read_text().replace("entity_key_serialization_version: 3", "entity_key_serialization_version: 2")
    )
    settings = _settings(tmp_path, monkeypatch, "sqlite", "int", AIRLOOP_FEATURE_REPO=str(repo))
    store = apply_repo(settings)
    with caplog.at_level(logging.INFO, logger="airloop.online_write"):
        writer = online_writer(settings, store)
    assert isinstance(writer, FeastWriter)
    lines = [r.getMessage() for r in caplog.records if r.name == "airloop.online_write"]
    assert len(lines) == 1 and "entity_key_serialization_version 2" in lines[0], lines
    writer.write(_frame(np.random.default_rng(0), "int", 5, np.array([1, 2, 3])))
    assert online_features(settings, [1, 2, 3])["i1"].notna().any()

    forced = _settings(
        tmp_path, monkeypatch, "sqlite", "int", AIRLOOP_FEATURE_REPO=str(repo), AIRLOOP_ONLINE_WRITER="airloop"
    )
    with pytest.raises(ValueError, match="entity_key_serialization_version 2"):
        online_writer(forced, store)
    feast = _settings(tmp_path, monkeypatch, "sqlite", "int", AIRLOOP_ONLINE_WRITER="feast")
    assert isinstance(online_writer(feast, apply_repo(feast)), FeastWriter)


def settings_repo():
    from airloop.config import PROJECT_DIR

    return PROJECT_DIR / "feature_repo"
