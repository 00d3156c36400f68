"""Atomic file I/O: write to a temp path, then rename; Parquet read one row group at a time; hash splits."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class DiskFull(OSError):
    """A write ran out of space: nothing was published (the temp file is removed), the previous version of
    the target (if any) is intact, and the same run succeeds again once space is freed."""


def _no_space(exc: BaseException) -> bool:
    # Python's own writes set errno; Arrow's (Parquet writers) raise OSError with the reason in the text
    return isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left on device" in str(exc))


@contextmanager
def full_disk_said(target: Path) -> Iterator[None]:
    """Turn running out of space while writing ``target`` into :class:`DiskFull`, saying where and how
    much is free (Arrow's own error names neither)."""
    try:
        yield
    except OSError as exc:
        if not _no_space(exc) or isinstance(exc, DiskFull):
            raise
        free = shutil.disk_usage(next(p for p in (target, *target.parents) if p.exists())).free / 2**20
        raise DiskFull(
            errno.ENOSPC,
            f"no space left on the device of {target.parent} ({free:.1f} MB free) while writing {target.name}: "
            "nothing was published; free space and run the day again",
        ) from exc


@contextmanager
def _claimed(folder: Path, prefix: str, suffix: str) -> Iterator[Path]:
    """A new empty file in ``folder``, held with an exclusive ``flock`` while the block runs: the mark of a
    live writer, which the kernel drops when the process dies, however it dies (across PID namespaces, and
    across hosts on a file system that honours ``flock``, as NFSv4 does). If a cleaner took the file for a
    dead writer's in the instant before it was locked, another is made."""
    import fcntl

    while True:
        fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
        fcntl.flock(fd, fcntl.LOCK_EX)  # at once, unless a cleaner holds it while removing it
        try:
            if os.path.samestat(os.stat(name), os.fstat(fd)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield Path(name)
    finally:
        os.close(fd)


def _remove_if_abandoned(claim: Path, companion: Path | None = None) -> None:
    """Remove the :func:`_claimed` file ``claim`` (and ``companion``, a folder that belongs to it) when no
    live process holds its lock: it was left by a killed writer. A live writer's is left alone."""
    import fcntl

    try:
        fd = os.open(claim, os.O_RDWR)  # write access: NFS grants an exclusive lock only then
    except OSError:
        return  # gone already (renamed into place or removed), or not ours to remove
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.stat(claim), os.fstat(fd)):
            if companion is not None:
                shutil.rmtree(companion, ignore_errors=True)
            os.unlink(claim)
    except (BlockingIOError, FileNotFoundError):
        pass  # its writer is alive, or it was renamed into place or removed meanwhile
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path next to ``target``; on success rename it over ``target``. Running out of space
    raises :class:`DiskFull`. Temp files of killed writers of ``target`` are removed first; those of
    live writers (another run writing the same target at once) are left alone: the last rename wins."""
    with full_disk_said(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):
            _remove_if_abandoned(stale)
        with _claimed(target.parent, f".{target.name}.", ".tmp") as tmp:
            try:
                yield tmp
                os.replace(tmp, target)  # still locked while renamed: no cleaner takes it mid-way
            finally:
                tmp.unlink(missing_ok=True)


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (``flock``: released when the process dies) while the
    block runs: for shared project files that their libraries rewrite in place (the GX project, Feast's
    registry and SQLite online store), so two runs of the same day, or a release during a run, take turns."""
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_parquet(df: pd.DataFrame, target: Path, row_group_size: int | None = None) -> Path:
    """Write ``df`` to ``target`` atomically (deterministic bytes for the same frame)."""
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", row_group_size=row_group_size)
    return target


def write_json(obj: Any, target: Path) -> Path:
    """Write JSON atomically with sorted keys, so equal content gives equal bytes."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return target


def write_text(text: str, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return target


def write_bytes(data: bytes, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def file_sha256(path: Path) -> str:
    """Content hash of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def date_range(end: str, days: int) -> list[str]:
    """The ``days`` dates ending with ``end`` (inclusive), oldest first."""
    last = date.fromisoformat(end)
    return [(last - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def iter_batches(
    source: Any, batch_rows: int = 65_536, columns: list[str] | None = None, row_groups: list[int] | None = None
) -> Iterator[Any]:
    """The record batches of a Parquet file (a path or ``pyarrow.parquet.ParquetFile``), of at most
    ``batch_rows`` rows, read one row group at a time. One pyarrow batch reader over a whole file keeps
    more and more memory as it goes (76 -> 153 MB live over 40 row groups of 250 k rows, pyarrow 25);
    a reader per row group stays flat (22 MB)."""
    import pyarrow.parquet as pq

    f = source if isinstance(source, pq.ParquetFile) else pq.ParquetFile(source)
    for group in range(f.num_row_groups) if row_groups is None else row_groups:
        yield from f.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)


def key_hash(keys: pd.DataFrame | pd.Series) -> np.ndarray:
    """A stable 64-bit hash per row of ``keys`` (the same values give the same hash on every run and
    machine): the rule behind the hash splits and the canary's share of entities."""
    return pd.util.hash_pandas_object(keys, index=False).to_numpy()


def in_fraction(keys: pd.Series, fraction: float) -> np.ndarray:
    """Which rows fall in a stable ``fraction`` of the key space (by :func:`key_hash`): the same entity is
    in or out on every day and retry."""
    return key_hash(keys) % 10_000 < round(fraction * 10_000)


@contextmanager
def split_by_key(
    files: list[Path], columns: list[str], keys: list[str], buckets: int, folder: Path, batch_rows: int
) -> Iterator[list[Path]]:
    """Copy ``columns`` of the Parquet ``files`` into ``buckets`` Parquet files in ``folder`` by a hash
    of the ``keys`` columns, in one pass of ``batch_rows``-row batches: rows with equal keys land in
    the same bucket (in their original order), so each bucket can be processed on its own in memory
    bounded by its size. Yields the bucket paths (a bucket may be empty). ``folder`` belongs to one
    stage and day; each call writes a sub-folder of its own there (held by a :func:`_claimed` lock file, so
    two runs of the day at once never touch each other's buckets), removes first what killed runs left,
    and its own sub-folder on exit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.suffix == ".lock":
            _remove_if_abandoned(entry, folder / entry.stem)
        elif not entry.with_name(f"{entry.name}.lock").exists():  # no claim: a killed run's, or an older layout's
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    with _claimed(folder, "split-", ".lock") as claim:
        own = folder / claim.stem
        own.mkdir()
        try:
            paths = [own / f"bucket-{b:04d}.parquet" for b in range(buckets)]
            with full_disk_said(own / "bucket.parquet"), contextlib.ExitStack() as stack:
                writers: list[Any] = []
                for f in files:
                    for batch in iter_batches(f, batch_rows, columns):
                        table = pa.Table.from_batches([batch])
                        if not writers:
                            schema = table.schema
                            writers = [stack.enter_context(pq.ParquetWriter(p, schema)) for p in paths]
                        table = table.cast(schema)
                        frame = table.select(keys).to_pandas()
                        bucket = key_hash(frame) % buckets
                        order = np.argsort(bucket, kind="stable")
                        bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
                        table = table.take(order)
                        for b in range(buckets):
                            if bounds[b + 1] > bounds[b]:
                                writers[b].write_table(table.slice(bounds[b], bounds[b + 1] - bounds[b]))
            yield paths
        finally:
            shutil.rmtree(own, ignore_errors=True)
            claim.unlink(missing_ok=True)
