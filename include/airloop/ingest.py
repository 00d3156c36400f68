"""Ingest: copy the landing batch of a logical date into the raw zone, coerced to the spec's types.

The files are read and written in chunks of ``settings.chunk_rows`` rows, so memory stays flat
however large the day. Rows keep the landing order (files by name, rows as they come): every
reader downstream that needs an order sorts by itself (features by entity and time, training by
time and entity), so a global sort (an external merge sort to keep memory flat) would buy nothing.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from airloop import lake
from airloop.config import Settings
from airloop.quarantine import quarantine_batch
from airloop.sources import describe, local_files, s3_files
from airloop.spec import DatasetSpec
from airloop.storage import atomic_path, file_sha256, iter_batches, write_json

PANDAS_INDEX = re.compile(r"__index_level_\d+__")  # a non-range index pandas wrote as a column


class UnreadableFile(ValueError):
    """A landing file that cannot be parsed at all."""


def read_chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """Read one CSV (UTF-8) or Parquet file in frames of at most ``rows`` rows (at least one frame,
    empty for an empty table); raise UnreadableFile saying what is wrong in plain words."""
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            with pq.ParquetFile(path) as f:
                names = [n for n in f.schema_arrow.names if not PANDAS_INDEX.fullmatch(n)]
                if f.metadata.num_rows == 0:
                    yield f.schema_arrow.empty_table().select(names).to_pandas(ignore_metadata=True)
                for batch in iter_batches(f, rows, names):
                    yield batch.to_pandas(ignore_metadata=True)
        else:
            with pd.read_csv(path, encoding="utf-8", chunksize=rows) as reader:
                yield from reader
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


def read_file(path: Path) -> pd.DataFrame:
    """Read one CSV (UTF-8) or Parquet file whole (see ``read_chunks``)."""
    return pd.concat(read_chunks(path, 1 << 20), ignore_index=True)


def coerce(
    df: pd.DataFrame, spec: DatasetSpec, text: frozenset[str] = frozenset(), nullable: frozenset[str] = frozenset()
) -> tuple[pd.DataFrame, list[str]]:
    """Cast known columns to the spec's types and report what does not fit: a column that cannot be
    cast is kept as text and an unknown extra column is kept as text, both named in the notes, so
    validation blocks the batch with a reason (nothing is silently nulled or dropped). Columns in
    ``text`` are kept as text without a note; integer columns are plain int64 unless they hold nulls
    or are in ``nullable`` (GX's type checks reject pandas' nullable Int64). Row numbers in the
    notes are ``df``'s index labels."""
    df = df.copy()
    notes: list[str] = []
    extra = [c for c in df.columns if c not in spec.columns]
    if extra:
        notes.append(f"columns not in the dataset spec: {extra}")
    missing = [c for c in spec.columns if c not in df.columns]
    if missing:
        notes.append(f"columns missing: {missing}")
    casts = {spec.label: "int" if spec.task == "binary_classification" else "float"}
    casts.update({f.name: f.dtype for f in spec.features if f.dtype != "category"})
    casts[spec.timestamp] = "an ISO 8601 timestamp"
    strings = [f.name for f in spec.features if f.dtype == "category"]
    if spec.entity_dtype == "string":
        strings.append(spec.entity)
    else:
        casts[spec.entity] = "int"
    for col in [*strings, *extra, *text]:
        if col in df:
            df[col] = df[col].astype("string[pyarrow]")
    for col, dtype in casts.items():
        if col not in df or col in text:
            continue
        if col == spec.timestamp:
            values = pd.to_datetime(df[col], utc=True, format="ISO8601", errors="coerce")
        else:
            values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            row = bad.idxmax()
            df[col] = df[col].astype("string[pyarrow]")
            notes.append(f"column {col!r} is not {dtype}: {df[col][row]!r} at row {row}")
        elif dtype == "float":
            df[col] = values.astype("float64")
        elif dtype == "int":
            df[col] = values.astype("Int64" if col in nullable or values.isna().any() else "int64")
        else:
            df[col] = values
    return df.reset_index(drop=True), notes


class _Widen(Exception):
    """A chunk needs a column, or a wider column type (text, nullable int), that the written part lacks."""


def _fit(plan: dict[str, Any], chunk: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, bool]:
    """Coerce ``chunk`` under the column plan; widen the plan where the chunk does not fit it.
    Returns the coerced chunk and whether the plan widened (then coerce it again)."""
    new = [c for c in chunk.columns if c not in plan["columns"]]
    plan["columns"] += new
    chunk = chunk.reindex(columns=plan["columns"])
    out, notes = coerce(chunk, spec, frozenset(plan["text"]), frozenset(plan["nullable"]))
    casts = {spec.timestamp, spec.label, *(f.name for f in spec.features if f.dtype != "category")}
    casts |= {spec.entity} if spec.entity_dtype == "int" else set()
    text = {c for c in casts if c in out and out[c].dtype == "string"} - plan["text"]
    nullable = {c for c in out if str(out[c].dtype) == "Int64"} - plan["nullable"]
    plan["text"] |= text
    plan["nullable"] |= nullable
    plan["notes"] += [n for n in notes if n.startswith("column ")]
    return out, bool(new or text or nullable)


def _write_raw(settings: Settings, files: list[Path], target: Path, plan: dict[str, Any]) -> int:
    """Stream ``files`` into ``target`` (atomically) following the column plan; a chunk that does
    not fit what is already written widens the plan and raises _Widen, so the caller starts again.
    Returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0
    with contextlib.ExitStack() as stack:  # on exit: the writer closes, then the temp file is renamed
        tmp = stack.enter_context(atomic_path(target))
        writer = None
        for path in files:
            for chunk in read_chunks(path, settings.chunk_rows):
                chunk.index = pd.RangeIndex(rows, rows + len(chunk))  # row numbers in the notes
                out, widened = _fit(plan, chunk, settings.spec)
                if widened and writer is not None:
                    raise _Widen()
                if widened:
                    out, _ = _fit(plan, chunk, settings.spec)
                if len(out):
                    table = pa.Table.from_pandas(out, preserve_index=False)
                    writer = writer or stack.enter_context(pq.ParquetWriter(tmp, table.schema))
                    writer.write_table(table)
                    rows += len(out)
        if writer is None:  # an empty day: the columns, no rows
            empty = pd.DataFrame(columns=plan["columns"])
            coerce(empty, settings.spec, frozenset(plan["text"]))[0].to_parquet(tmp, index=False, engine="pyarrow")
    return rows


def ingest_batch(
    settings: Settings, ds: str, files: list[Path] | None = None, s3_client_kwargs: dict[str, Any] | None = None
) -> dict:
    """Read the landing batch of ``ds`` (the given files, else the configured source) and write
    the day's raw partition atomically, in chunks. An unreadable file quarantines the batch (BatchQuarantined)."""
    out = lake.partition(settings, lake.RAW, ds)
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
        # the column plan widens (new column, text, nullable int) at most once per column, then the
        # files are read again from the start: one pass for a well-formed batch
        plan: dict[str, Any] = {"columns": [], "text": set(), "nullable": set(), "notes": []}
        while True:
            try:
                rows = _write_raw(settings, files, out / lake.DATA_FILE, plan)
                break
            except _Widen:
                continue
            except UnreadableFile as exc:
                quarantine_batch(settings, ds, reason=f"unreadable input: {exc}", files=files)
        source_hashes = {origins[p]: file_sha256(p) for p in files}
    # the table-level notes (extra, missing columns) of the final column set, then the failed casts
    notes = coerce(pd.DataFrame(columns=plan["columns"]), settings.spec, frozenset(plan["columns"]))[1]
    summary = {
        "ds": ds,
        "rows": rows,
        "columns": plan["columns"],
        "sources": list(origins.values()),
        "source_sha256": source_hashes,
        "coercion_notes": notes + sorted(plan["notes"]),
        "path": str(out / lake.DATA_FILE),
        "sha256": file_sha256(out / lake.DATA_FILE),
    }
    write_json(summary, out / lake.INGEST_FILE)
    return summary
