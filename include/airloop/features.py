"""Features: write the offline feature table, apply the Feast repo, materialize, retrieve."""

from __future__ import annotations

import contextlib
import io
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from airloop.config import Settings
from airloop.spec import DatasetSpec
from airloop.storage import DATA_FILE, date_range, read_partitions, write_parquet

FEATURE_SERVICE = "churn_v1"


def feast_schema(spec: DatasetSpec) -> list[tuple[str, Any]]:
    """(name, Feast type) of each spec feature."""
    from feast.types import Float64, Int64, String

    types = {"int": Int64, "float": Float64, "category": String}
    return [(f.name, types[f.dtype]) for f in spec.features] + [(a.name, Float64) for a in spec.aggregates]


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


def get_store(settings: Settings) -> Any:
    """The Feast FeatureStore of ``feature_repo/`` configured for these settings."""
    os.environ.update(feast_env(settings))
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo))


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
    Explicit ``materialize`` windows mean apply cannot reset a watermark we rely on."""
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


def compute_aggregates(settings: Settings, ds: str) -> pd.DataFrame:
    """The day's feature rows plus each spec aggregate, computed per entity over the validated rows
    in the trailing window ``(t - window, t]`` of each row's own timestamp ``t``: only the past and
    the row itself, so a feature value never contains information from after its timestamp."""
    spec = settings.spec
    longest = max((a.window_days for a in spec.aggregates), default=1)
    dates = [d for d in date_range(ds, longest + 1) if (settings.partition("validated", d) / DATA_FILE).exists()]
    if ds not in dates:
        src = settings.partition("validated", ds) / DATA_FILE
        raise FileNotFoundError(f"no validated partition for {ds} at {src}: it failed validation or was not run")
    rows = read_partitions(settings.lake_dir / "validated", dates, [spec.entity, spec.timestamp, *spec.feature_names])
    rows = rows.sort_values([spec.entity, spec.timestamp], kind="stable").reset_index(drop=True)
    for a in spec.aggregates:
        values = None if a.fn == "count" else rows[a.column].to_numpy(dtype="float64")
        rows[a.name] = window_aggregate(
            rows[spec.entity].to_numpy(), rows[spec.timestamp].to_numpy("datetime64[ns]"), values, a.fn, a.window_days
        )
    start, end = _day_bounds(ds)
    today = (rows[spec.timestamp] >= start) & (rows[spec.timestamp] < end)
    day = rows.loc[today].sort_values([spec.timestamp, spec.entity], kind="stable")
    return day.reset_index(drop=True)


def materialize_features(settings: Settings, ds: str) -> dict:
    """Write the offline feature rows of ``ds`` (with aggregates) and load them into the online store.
    The window is explicit per logical date (no incremental watermark for ``apply`` to reset). A
    backfill of an older day re-materializes through the newest day already written, so the online
    store keeps each entity's latest values whatever the order of runs."""
    df = compute_aggregates(settings, ds)
    # row groups no larger than a scoring shard: scoring splits the day along them
    write_parquet(df, settings.features_dir / f"{ds}.parquet", min(settings.score_shard_rows, settings.chunk_rows))
    store = apply_repo(settings)
    start, end = _day_bounds(ds)
    newest = max(p.stem for p in settings.features_dir.glob("*.parquet"))
    end = max(end, _day_bounds(newest)[1])
    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints a progress banner per view
        store.materialize(start_date=start, end_date=end, feature_views=["customer_snapshot_fv"])
    return {
        "ds": ds,
        "rows": len(df),
        "entities": int(df[settings.spec.entity].nunique()),
        "online_store": settings.online_store,
        "window": [start.isoformat(), end.isoformat()],
    }


def training_frame(settings: Settings, labels: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time-correct join of the feature service onto ``labels``
    (entity, timestamp, label): each row gets the feature values as of its timestamp."""
    store = get_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    return store.get_historical_features(entity_df=labels, features=service).to_df()


def online_features(settings: Settings, entity_ids: list[int]) -> pd.DataFrame:
    """Latest features of ``entity_ids`` from the online store (what scoring reads)."""
    store = get_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    rows = [{settings.spec.entity: int(e)} for e in entity_ids]
    return store.get_online_features(features=service, entity_rows=rows).to_df()
