"""Features: write the offline feature table, apply the Feast repo, materialize, retrieve."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from airloop import lake
from airloop.config import Settings
from airloop.spec import DatasetSpec
from airloop.storage import (
    atomic_path,
    date_range,
    exclusive,
    iter_batches,
    key_hash,
    split_by_key,
    write_json,
    write_parquet,
)


def feast_env(settings: Settings) -> dict[str, str]:
    """Environment variables that ``feature_repo/feature_store.yaml`` reads."""
    if settings.online_store == "redis":
        online = {"type": "redis", "connection_string": settings.redis_connection}
    else:
        online = {"type": "sqlite", "path": str(settings.feast_dir / "online.db")}
    return {
        "AIRLOOP_HOME": str(settings.home),
        "AIRLOOP_FEAST_ONLINE_STORE": json.dumps(online),
    }


def repo_config(settings: Settings) -> Any:
    """``feature_repo/feature_store.yaml`` with its variables filled from these settings (the process
    environment is neither read nor changed)."""
    from feast.repo_config import RepoConfig

    values = feast_env(settings)
    text = (settings.feature_repo / "feature_store.yaml").read_text()
    config = RepoConfig(**yaml.safe_load(re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)))
    config.repo_path = settings.feature_repo
    return config


def get_store(settings: Settings) -> Any:
    """The Feast FeatureStore of ``feature_repo/`` configured for these settings."""
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo), config=repo_config(settings))


def repo_objects(settings: Settings) -> list[Any]:
    """The Feast objects declared in ``feature_repo/definitions.py`` (loaded by path, no chdir)."""
    import importlib.util

    from feast import Entity, FeatureService, FeatureView, FileSource

    path = settings.feature_repo / "definitions.py"
    module_spec = importlib.util.spec_from_file_location("airloop_feature_repo", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    kinds = (Entity, FileSource, FeatureView, FeatureService)
    return [obj for obj in vars(module).values() if isinstance(obj, kinds)]


def apply_repo(settings: Settings) -> Any:
    """Register the repo's definitions (what ``feast apply`` does); return the store.
    The online store is written per logical date (no incremental watermark for apply to reset)."""
    store = get_store(settings)
    store.apply(repo_objects(settings))
    return store


def _day_bounds(ds: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    return start, start + timedelta(days=1)


def window_aggregate(
    entity: np.ndarray, ts: np.ndarray, values: np.ndarray | None, fn: str, window_days: int
) -> np.ndarray:
    """Per row, ``fn`` over the same entity's rows in the time window ``(t - window, t]`` up to and
    including the row itself (rows sorted by entity, then time), as pandas' groupby-rolling gives,
    but vectorised: cumulative sums between window bounds found by binary search (O(n log n)),
    instead of one Python-level rolling object per entity. NaN values are skipped; ``count``
    counts rows."""
    n = len(entity)
    codes = np.unique(entity, return_inverse=True)[1].astype("int64")
    t = ts.astype("datetime64[ns]").astype("int64")
    # search in (entity, time-rank) space: exact at ns precision and no int64 overflow however many
    # entities (a combined entity * time-span key overflows past a few thousand entities)
    uniq, rank = np.unique(t, return_inverse=True)
    bound = np.searchsorted(uniq, t - window_days * 86_400_000_000_000, side="right")  # first time inside
    m = len(uniq) + 1
    left = np.searchsorted(codes * m + rank, codes * m + bound, side="left")
    idx = np.arange(n)
    if fn == "count":
        return (idx + 1 - left).astype("float64")
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    seen = np.concatenate([[0], np.cumsum(present)])
    have = seen[idx + 1] - seen[left]
    if fn in ("sum", "mean"):
        total = np.concatenate([[0.0], np.cumsum(filled)])
        sums = total[idx + 1] - total[left]
        out = sums if fn == "sum" else sums / np.maximum(have, 1)
    elif fn == "max":
        out = np.full(n, -np.inf)
        masked = np.where(present, values, -np.inf)
        for lag in range(int((idx - left).max()) + 1 if n else 0):  # window length in rows, small
            ok = idx - lag >= left
            out[ok] = np.maximum(out[ok], masked[(idx - lag)[ok]])
    else:
        raise ValueError(f"unknown aggregate function {fn!r}")
    return np.where(have > 0, out, np.nan)


def _window_files(settings: Settings, ds: str) -> list[Path]:
    """The validated partitions that the aggregates of ``ds`` read: ``ds`` and its trailing window."""
    longest = max((a.window_days for a in settings.spec.aggregates), default=1)
    files = [lake.data_file(settings, lake.VALIDATED, d) for d in date_range(ds, longest + 1)]
    if not files[-1].exists():
        raise FileNotFoundError(f"no validated partition for {ds} at {files[-1]}: it failed validation or was not run")
    return [f for f in files if f.exists()]


def _aggregate(spec: DatasetSpec, rows: pd.DataFrame, ds: str) -> pd.DataFrame:
    """The rows of ``ds`` with each spec aggregate; ``rows`` holds every window row of their entities."""
    rows = rows.sort_values([spec.entity, spec.timestamp], kind="stable").reset_index(drop=True)
    for a in spec.aggregates:
        values = None if a.fn == "count" else rows[a.column].to_numpy(dtype="float64")
        rows[a.name] = window_aggregate(
            rows[spec.entity].to_numpy(), rows[spec.timestamp].to_numpy("datetime64[ns]"), values, a.fn, a.window_days
        )
    start, end = _day_bounds(ds)
    today = (rows[spec.timestamp] >= start) & (rows[spec.timestamp] < end)
    return rows.loc[today].sort_values([spec.timestamp, spec.entity], kind="stable").reset_index(drop=True)


def compute_aggregates(settings: Settings, ds: str) -> pd.DataFrame:
    """The day's feature rows plus each spec aggregate, computed per entity over the validated rows
    in the trailing window ``(t - window, t]`` of each row's own timestamp ``t``: only the past and
    the row itself, so a feature value never contains information from after its timestamp."""
    spec = settings.spec
    columns = [spec.entity, spec.timestamp, *spec.feature_names]
    files = _window_files(settings, ds)
    return _aggregate(spec, pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True), ds)


def write_features(settings: Settings, ds: str) -> tuple[int, int]:
    """Write the offline feature partition of ``ds`` atomically; return its rows and entities. A window of
    more than ``chunk_rows`` rows is split by entity hash into buckets of about that size, each
    aggregated alone, so memory stays flat however large the day (rows then come bucket by bucket,
    each bucket in time order). Row groups are no larger than a scoring shard: scoring splits along them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = settings.spec
    target = lake.data_file(settings, lake.FEATURES, ds)
    group_rows = min(settings.score_shard_rows, settings.chunk_rows)
    files = _window_files(settings, ds)
    buckets = -(-sum(pq.ParquetFile(f).metadata.num_rows for f in files) // settings.chunk_rows)
    if buckets <= 1:
        df = compute_aggregates(settings, ds)
        write_parquet(df, target, group_rows)
        return len(df), int(df[spec.entity].nunique())
    columns = [spec.entity, spec.timestamp, *spec.feature_names]
    rows = entities = 0
    folder = lake.staging(settings, lake.FEATURES, ds)
    with split_by_key(files, columns, [spec.entity], buckets, folder, settings.chunk_rows) as paths:
        with atomic_path(target) as out:
            writer = None
            for path in paths:
                day = _aggregate(spec, pd.read_parquet(path), ds)
                path.unlink()
                entities += int(day[spec.entity].nunique())  # buckets share no entity
                table = pa.Table.from_pandas(day, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                writer.write_table(table.cast(writer.schema), row_group_size=group_rows)
                rows += table.num_rows
            writer.close()
    return rows, entities


def prepare_materialization(settings: Settings, ds: str) -> dict:
    """The offline part of materializing ``ds``: write its feature partition (with aggregates), compute again
    the newer days already written whose aggregate windows reach back to it (a backfill out of order, a late
    day: the order of runs never changes a value) and register the Feast repo. Runs take turns (a lock on the
    Feast folder). Returns what the online write needs: the day and its ``settings.write_buckets``."""
    with exclusive(settings.feast_dir / ".airloop.lock"):  # the features zone, Feast's registry and online store
        began = time.perf_counter()  # after the lock: the work, not the wait
        rows, entities = write_features(settings, ds)
        reach = max((a.window_days for a in settings.spec.aggregates), default=0)
        if reach:
            last = (date.fromisoformat(ds) + timedelta(days=reach)).isoformat()
            for later in lake.dates(settings, lake.FEATURES, start=ds, end=last):
                if later > ds:
                    write_features(settings, later)
        apply_repo(settings)
    seconds = round(time.perf_counter() - began, 3)
    return {"ds": ds, "rows": rows, "entities": entities, "buckets": settings.write_buckets, "seconds": seconds}


def write_online_bucket(settings: Settings, ds: str, bucket: int = 0, buckets: int = 1) -> dict:
    """Load the entities of one entity-hash bucket (``key_hash % buckets == bucket``) of ``ds`` and of every newer
    day already in the features zone into the online store, oldest day first, batch by batch (flat memory), with
    the writer ``AIRLOOP_ONLINE_WRITER`` selects (``airloop.online_write``). Buckets share no entity, so they can
    write at once; a bucket's writes take turns across runs (a lock per bucket, one for all of SQLite's single-
    writer file) and list the days inside it, so whichever run writes a bucket last writes its newest days last:
    an older day never overwrites newer values, in any order of runs or retries (the SQLite store keeps the last
    write; the Redis store also skips a row older than the stored one)."""
    import pyarrow.compute as pc

    from airloop.online_write import online_writer

    if not 0 <= bucket < buckets:
        raise ValueError(f"bucket {bucket} is not in 0..{buckets - 1}")
    entity = settings.spec.entity
    with exclusive(settings.feast_dir / ".airloop.lock"):  # the registry is read whole, never half-applied
        writer = online_writer(settings, get_store(settings))
    name = "sqlite" if settings.online_store == "sqlite" else f"{settings.online_store}-{bucket}-of-{buckets}"
    rows = 0
    with exclusive(settings.feast_dir / f".online-{name}.lock"):
        began = time.perf_counter()  # after the lock: the work, not the wait
        try:
            days = lake.dates(settings, lake.FEATURES, start=ds)
            for day in days:
                path = lake.data_file(settings, lake.FEATURES, day)
                for batch in iter_batches(path, writer.batch_rows * buckets):  # about batch_rows of this bucket
                    if buckets > 1:
                        keys = batch.column(batch.schema.get_field_index(entity)).to_pandas()
                        batch = batch.filter(pc.equal(key_hash(keys) % buckets, bucket))
                    if batch.num_rows:
                        writer.write(batch)
                        rows += batch.num_rows
        finally:
            writer.close()
    seconds = round(time.perf_counter() - began, 3)
    return {"ds": ds, "bucket": bucket, "days": days, "rows": rows, "online_writer": writer.name, "seconds": seconds}


def record_materialization(settings: Settings, prepared: dict, written: list[dict]) -> dict:
    """The summary of one day's materialization from its offline part and its bucket writes, kept where
    ``airloop.metrics`` reads it; returned."""
    ds = prepared["ds"]
    days = sorted({day for w in written for day in w["days"]} | {ds})
    result = {
        "ds": ds,
        "rows": prepared["rows"],
        "entities": prepared["entities"],
        "online_store": settings.online_store,
        "online_writer": written[0]["online_writer"] if written else None,
        "online_buckets": len(written),
        "window": [_day_bounds(ds)[0].isoformat(), _day_bounds(days[-1])[1].isoformat()],
        "seconds": round(prepared["seconds"] + sum(w["seconds"] for w in written), 3),
    }
    write_json(result, lake.materialize_record(settings, ds))
    return result


def materialize_features(settings: Settings, ds: str) -> dict:
    """Materialize ``ds`` in one process: :func:`prepare_materialization`, every bucket's
    :func:`write_online_bucket` in turn, :func:`record_materialization` (the daily DAG maps the buckets).
    Feast's own ``materialize`` is not used: it converts the whole window to protobuf objects at once (~8 GB
    for 1 M rows)."""
    prepared = prepare_materialization(settings, ds)
    buckets = prepared["buckets"]
    written = [write_online_bucket(settings, ds, b, buckets) for b in range(buckets)]
    return record_materialization(settings, prepared, written)


def training_frame(settings: Settings, labels: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time-correct join of the feature service onto ``labels``
    (entity, timestamp, label): each row gets the feature values as of its timestamp. A row with no
    snapshot of its entity at or before its timestamp within the TTL is left out (Feast's file store drops it)."""
    from feast.infra.offline_stores.offline_utils import DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL as EVENT_TIME

    store = get_store(settings)
    service = store.get_feature_service(settings.spec.feature_service_name)
    # the entity frame's time column under Feast's own name, so Feast need not guess it (and print that it did)
    renamed = labels.rename(columns={settings.spec.timestamp: EVENT_TIME})
    rows = store.get_historical_features(entity_df=renamed, features=service).to_df()
    return rows.rename(columns={EVENT_TIME: settings.spec.timestamp})


def online_features(settings: Settings, entity_ids: list[Any]) -> pd.DataFrame:
    """Latest features of ``entity_ids`` from the online store (what scoring reads)."""
    store = get_store(settings)
    service = store.get_feature_service(settings.spec.feature_service_name)
    rows = [{settings.spec.entity: settings.spec.key(e)} for e in entity_ids]
    return store.get_online_features(features=service, entity_rows=rows).to_df()
