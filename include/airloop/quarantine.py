"""Quarantine: where a bad batch goes, with why (``airloop.release`` puts a fixed batch back)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

import pandas as pd

from airloop import lake
from airloop.config import Settings
from airloop.storage import write_json, write_parquet, write_text


class BatchQuarantined(RuntimeError):
    """A batch was unreadable or failed blocking expectations and was moved to quarantine."""


def quarantine_batch(
    settings: Settings,
    ds: str,
    reason: str,
    data: pd.DataFrame | Path | None = None,
    files: list[Path] | None = None,
    result: dict | None = None,
    docs_page: str | None = None,
) -> NoReturn:
    """Replace the day's quarantine partition (atomically, as one folder) with the batch, its validation
    result, its Data Docs page and a readable ``REASON.txt``; drop any validated partition of that
    date; raise BatchQuarantined with the reason."""
    target = lake.partition(settings, lake.QUARANTINE, ds)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        if isinstance(data, Path):  # a Parquet file already written: copy its bytes
            shutil.copyfile(data, staging / lake.DATA_FILE)
        elif data is not None:
            write_parquet(data, staging / lake.DATA_FILE)
        for f in files or []:
            (staging / "files").mkdir(exist_ok=True)
            shutil.copy2(f, staging / "files" / f.name)
        if result is not None:
            write_json(result, staging / lake.VALIDATION_FILE)
        page_note = ""
        if docs_page:
            page = _copy_docs_page(settings, Path(docs_page), staging / "data_docs")
            page_note = f"\nData Docs: {target / page.relative_to(staging)}"
        message = f"batch {ds} quarantined at {target}: {reason}{page_note}"
        write_text(message + "\n", staging / lake.REASON_FILE)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(lake.partition(settings, lake.VALIDATED, ds), ignore_errors=True)
    raise BatchQuarantined(message.replace(str(staging), str(target)))


def _copy_docs_page(settings: Settings, page: Path, dest: Path) -> Path:
    """Copy one rendered validation page with the site's static assets, keeping relative links."""
    site = settings.data_docs_dir
    rel = page.relative_to(site)
    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(page, dest / rel)
    if (site / "static").exists():
        shutil.copytree(site / "static", dest / "static", dirs_exist_ok=True)
    return dest / rel
