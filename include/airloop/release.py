"""Release: put a fixed quarantined batch back through ingestion and validation."""

from __future__ import annotations

import shutil
from pathlib import Path

from airloop import lake
from airloop.config import Settings
from airloop.ingest import ingest_batch
from airloop.validate import validate_batch


def release_batch(settings: Settings, ds: str, path: Path | None = None) -> dict:
    """Re-ingest a fixed batch for ``ds`` (``path``, else the quarantined data or files) and
    re-validate it. Pass: it moves on to the validated zone and leaves quarantine. Fail: it stays
    quarantined and BatchQuarantined says why."""
    qdir = lake.partition(settings, lake.QUARANTINE, ds)
    if path is None:
        if not qdir.exists():
            raise FileNotFoundError(f"{ds} is not in quarantine ({qdir} does not exist)")
        path = qdir / lake.DATA_FILE if (qdir / lake.DATA_FILE).exists() else qdir / "files"
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    ingest_batch(settings, ds, files=files)
    result = validate_batch(settings, ds)
    shutil.rmtree(qdir, ignore_errors=True)
    return {**result, "released": True}
