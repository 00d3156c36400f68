"""Ingest: copy the landing batch of a logical date into the raw zone, coerced to the spec's types."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from airloop.config import Settings
from airloop.spec import DatasetSpec
from airloop.storage import DATA_FILE, write_json, write_parquet


def find_landing_files(settings: Settings, ds: str) -> list[Path]:
    """The landing files of date ``ds``; raise if there are none."""
    folder = settings.landing_dir / f"ds={ds}"
    files = sorted([*folder.glob("*.csv"), *folder.glob("*.parquet")])
    if not files:
        raise FileNotFoundError(f"no landing batch for {ds}: expected *.csv or *.parquet under {folder}")
    return files


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def coerce(df: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, list[str]]:
    """Cast known columns to the spec's types. A column that cannot be cast is kept as text
    (so validation reports it) and named in the returned notes; nothing is silently nulled."""
    df = df.copy()
    notes: list[str] = []
    casts = {spec.entity: "Int64", spec.label: "Int64"}
    casts.update(
        {f.name: {"int": "Int64", "float": "float64"}[f.dtype] for f in spec.features if f.dtype != "category"}
    )
    for col, dtype in casts.items():
        if col not in df:
            continue
        try:
            values = pd.to_numeric(df[col], errors="raise")
            # plain int64 unless there are nulls (GX's type checks reject pandas' nullable Int64)
            df[col] = values.astype(dtype if dtype == "float64" or values.isna().any() else "int64")
        except (ValueError, TypeError) as exc:
            df[col] = df[col].astype("string")
            notes.append(f"column {col!r} is not {dtype}: {exc}")
    for f in spec.features:
        if f.dtype == "category" and f.name in df:
            df[f.name] = df[f.name].astype("string")
    if spec.timestamp in df:
        df[spec.timestamp] = pd.to_datetime(df[spec.timestamp], utc=True)
        df = df.sort_values([spec.timestamp, *([spec.entity] if spec.entity in df else [])], kind="stable")
    return df.reset_index(drop=True), notes


def ingest_batch(settings: Settings, ds: str) -> dict:
    """Read the landing batch of ``ds`` and write ``raw/ds=<ds>/`` atomically; return a summary."""
    files = find_landing_files(settings, ds)
    df = pd.concat([_read(p) for p in files], ignore_index=True)
    df, notes = coerce(df, settings.spec)
    out = settings.partition("raw", ds)
    write_parquet(df, out / DATA_FILE)
    summary = {
        "ds": ds,
        "rows": len(df),
        "columns": list(df.columns),
        "sources": [str(p) for p in files],
        "coercion_notes": notes,
        "path": str(out / DATA_FILE),
    }
    write_json(summary, out / "_ingest.json")
    return summary
