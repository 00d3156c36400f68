"""Ingest: copy the landing batch of a logical date into the raw zone, coerced to the spec's types."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from airloop.config import Settings
from airloop.quarantine import quarantine_batch
from airloop.sources import describe, local_files, s3_files
from airloop.spec import DatasetSpec
from airloop.storage import DATA_FILE, file_sha256, write_json, write_parquet


class UnreadableFile(ValueError):
    """A landing file that cannot be parsed at all."""


def read_file(path: Path) -> pd.DataFrame:
    """Read one CSV (UTF-8) or Parquet file; raise UnreadableFile saying what is wrong in plain words."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{path.name} is not UTF-8 text (byte {exc.object[exc.start]:#x} at offset {exc.start}): "
            "re-export it as UTF-8"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise UnreadableFile(f"{path.name} is empty (0 bytes, no header)") from exc
    except pd.errors.ParserError as exc:
        raise UnreadableFile(f"{path.name} is not valid CSV: {str(exc).strip()}") from exc
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise UnreadableFile(f"{path.name} is not a readable Parquet file (truncated or corrupt): {exc}") from exc


def coerce(df: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, list[str]]:
    """Cast known columns to the spec's types and report what does not fit: a column that cannot be
    cast is kept as text and an unknown extra column is kept, both named in the notes, so
    validation blocks the batch with a reason (nothing is silently nulled or dropped)."""
    df = df.copy()
    notes: list[str] = []
    extra = [c for c in df.columns if c not in spec.columns]
    if extra:
        notes.append(f"columns not in the dataset spec: {extra}")
    missing = [c for c in spec.columns if c not in df.columns]
    if missing:
        notes.append(f"columns missing: {missing}")
    casts = {spec.entity: "int", spec.label: "int" if spec.task == "binary_classification" else "float"}
    casts.update({f.name: f.dtype for f in spec.features if f.dtype != "category"})
    for col, dtype in casts.items():
        if col not in df:
            continue
        try:
            values = pd.to_numeric(df[col], errors="raise")
            # plain int64 unless there are nulls (GX's type checks reject pandas' nullable Int64)
            df[col] = values.astype("float64" if dtype == "float" else "Int64" if values.isna().any() else "int64")
        except (ValueError, TypeError) as exc:
            df[col] = df[col].astype("string")
            notes.append(f"column {col!r} is not {dtype}: {exc}")
    for f in spec.features:
        if f.dtype == "category" and f.name in df:
            df[f.name] = df[f.name].astype("string[pyarrow]")
    if spec.timestamp in df:
        try:
            df[spec.timestamp] = pd.to_datetime(df[spec.timestamp], utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            df[spec.timestamp] = df[spec.timestamp].astype("string")
            notes.append(f"column {spec.timestamp!r} is not an ISO 8601 timestamp: {exc}")
        else:
            keys = [spec.timestamp, *([spec.entity] if spec.entity in df else [])]
            df = df.sort_values(keys, kind="stable")
    return df.reset_index(drop=True), notes


def ingest_batch(
    settings: Settings, ds: str, files: list[Path] | None = None, s3_client_kwargs: dict[str, Any] | None = None
) -> dict:
    """Read the landing batch of ``ds`` (the given files, else the configured source) and write
    ``raw/ds=<ds>/`` atomically. An unreadable file quarantines the batch (BatchQuarantined)."""
    with tempfile.TemporaryDirectory() as workdir:
        if files is not None:
            origins = {p: str(p) for p in files}
        elif settings.source == "s3":
            origins = s3_files(settings, ds, Path(workdir), s3_client_kwargs)
        else:
            origins = {p: str(p) for p in local_files(settings, ds)}
        files = list(origins)
        if not files:
            raise FileNotFoundError(f"no landing batch for {ds}: no *.csv or *.parquet under {describe(settings, ds)}")
        try:
            frames = [read_file(p) for p in files]
        except UnreadableFile as exc:
            quarantine_batch(settings, ds, reason=f"unreadable input: {exc}", files=files)
        source_hashes = {origins[p]: file_sha256(p) for p in files}
    df, notes = coerce(pd.concat(frames, ignore_index=True), settings.spec)
    out = settings.partition("raw", ds)
    write_parquet(df, out / DATA_FILE)
    summary = {
        "ds": ds,
        "rows": len(df),
        "columns": list(df.columns),
        "sources": list(origins.values()),
        "source_sha256": source_hashes,
        "coercion_notes": notes,
        "path": str(out / DATA_FILE),
        "sha256": file_sha256(out / DATA_FILE),
    }
    write_json(summary, out / "_ingest.json")
    return summary
