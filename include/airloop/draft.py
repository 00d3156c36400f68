"""Draft: a dataset spec inferred from a sample file of your data, for a person to review (as TFX's SchemaGen
drafts a schema), and its expectation suite next to it. ``airloop init`` calls :func:`draft_spec`.

What is inferred, and how (said again in the file's comments):
* a numeric column with at most ``MAX_CATEGORIES`` distinct integer values is a category (integer-coded
  data: season 1-4, weekday 0-6), as is a text column with at most ``MAX_TEXT_CATEGORIES``; other text
  columns are left out, named in a comment;
* numeric ranges are the observed range widened by ``MARGIN`` of its span on each side (not below 0 when
  no observed value was), integers rounded outwards;
* ``max_missing`` is twice the observed share of nulls, plus 1 point when there were any (0 otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from airloop import lake
from airloop.config import Settings
from airloop.ingest import read_file
from airloop.spec import load_spec
from airloop.validate import write_suite

MARGIN = 0.1
MAX_CATEGORIES = 12
MAX_TEXT_CATEGORIES = 50


def _range(values: pd.Series, integer: bool) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    pad = MARGIN * (hi - lo) or MARGIN * max(abs(hi), 1.0)
    low, high = lo - pad, hi + pad
    if lo >= 0:
        low = max(low, 0.0)
    if integer:
        return float(math.floor(low)), float(math.ceil(high))
    return round(low, 6), round(high, 6)


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def infer_feature(name: str, values: pd.Series) -> dict[str, Any] | str:
    """One feature's spec entry from its sample values, or why it is left out."""
    present = values.dropna()
    entry: dict[str, Any] = {"name": name}
    if present.empty:
        return "no values in the sample"
    if pd.api.types.is_bool_dtype(present):
        entry.update(dtype="category", categories=["False", "True"])
    elif pd.api.types.is_numeric_dtype(present):
        integer = bool((present == present.round()).all())
        distinct = present.nunique()
        if integer and distinct <= MAX_CATEGORIES:
            entry.update(dtype="category", categories=[str(int(v)) for v in sorted(present.unique())])
        else:
            low, high = _range(present.astype("float64"), integer)
            entry.update(dtype="int" if integer else "float", min=_number(low), max=_number(high))
    else:
        distinct = present.astype(str).nunique()
        if distinct > MAX_TEXT_CATEGORIES:
            return f"text with {distinct} distinct values (a category needs at most {MAX_TEXT_CATEGORIES})"
        entry.update(dtype="category", categories=sorted(present.astype(str).unique().tolist()))
    missing = float(values.isna().mean())
    if missing:
        entry["max_missing"] = round(min(1.0, 2 * missing + 0.01), 3)
    return entry


def _check_label(task: str, values: pd.Series) -> dict[str, Any]:
    present = values.dropna()
    if task == "binary_classification":
        found = sorted(present.unique().tolist())
        if not set(found) <= {0, 1}:
            raise ValueError(
                f"a binary_classification label must be 0/1; the sample's {values.name!r} holds {found[:10]}"
            )
        return {}
    if not pd.api.types.is_numeric_dtype(present):
        raise ValueError(f"a regression label must be numeric; the sample's {values.name!r} is {present.dtype}")
    low, high = _range(present.astype("float64"), False)
    return {"label_min": _number(low), "label_max": _number(high)}


def read_sample(sample: Path) -> pd.DataFrame:
    """A sample file, or every CSV/Parquet file under a folder (e.g. the landing folder; label files left out)."""
    if not sample.is_dir():
        return read_file(sample)
    files = sorted(
        p
        for p in sample.rglob("*")
        if p.suffix in (".csv", ".parquet") and lake.LABELS not in p.relative_to(sample).parts
    )
    if not files:
        raise FileNotFoundError(f"no *.csv or *.parquet file under {sample}")
    return pd.concat([read_file(p) for p in files], ignore_index=True)


def draft_spec(
    sample: Path,
    out: Path,
    name: str,
    task: str,
    entity: str,
    timestamp: str,
    label: str,
    force: bool = False,
) -> dict[str, Any]:
    """Write a commented dataset spec for ``sample`` at ``out`` and its suite next to it; return their paths,
    the sample's first and last day, and where daily files land."""
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: review and edit it, or pass --force to draft it again")
    df = read_sample(sample)
    missing = [c for c in (entity, timestamp) if c not in df.columns]
    if missing:
        raise ValueError(f"{sample.name} has no column {missing}; its columns: {list(df.columns)}")
    # a sample without the label column: its outcomes arrive later, only through the label feed
    when = pd.to_datetime(df[timestamp], utc=True, format="ISO8601", errors="coerce")
    if when.isna().all():
        raise ValueError(f"{timestamp!r} holds no ISO 8601 timestamps (e.g. {df[timestamp].iloc[0]!r})")
    integer_ids = pd.api.types.is_integer_dtype(df[entity].dropna())
    features, left_out = [], {}
    for col in df.columns:
        if col in (entity, timestamp, label):
            continue
        entry = infer_feature(col, df[col])
        (left_out.__setitem__(col, entry) if isinstance(entry, str) else features.append(entry))
    if not features:
        raise ValueError(f"no usable feature column in {sample.name}: {left_out}")
    days = when.dt.strftime("%Y-%m-%d")
    head = {
        "name": name,
        "task": task,
        "entity": entity,
        "entity_dtype": "int" if integer_ids else "string",
        "timestamp": timestamp,
        "label": label,
        **(_check_label(task, df[label]) if label in df.columns else {"label_in_batch": False}),
        "rows_per_day": {"min": 1, "max": 10_000_000},
    }
    lines = [
        f"# Dataset spec drafted by `airloop init` from {sample} ({len(df)} rows, {days.min()}..{days.max()}).",
        "# Review it: every field is explained in docs/spec.md. Inferred: integer columns with at most",
        f"# {MAX_CATEGORIES} distinct values are categories; ranges are the sample's, widened by {MARGIN:.0%} of",
        "# their span on each side (not below 0 when nothing was); max_missing is twice the sample's share",
        "# of nulls plus 1 point. A batch outside these bounds is quarantined: widen what is too tight.",
        yaml.safe_dump(head, sort_keys=False).rstrip(),
        "features:",
        *(f"  - {yaml.safe_dump(f, default_flow_style=True, sort_keys=False, width=1000).strip()}" for f in features),
        *(f"# left out: {col} ({why})" for col, why in left_out.items()),
        "# aggregates: per-entity windowed aggregates, e.g. - {name: x_mean_7d, column: x, fn: mean, window_days: 7}",
        "aggregates: []",
        "# slices: subgroups the promotion gate checks on their own, e.g. - {name: a, column: c, values: [1]}",
        "slices: []",
        "intended_use: ''",
        "known_limits: []",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    load_spec(out)  # what was written reads back as a valid spec
    settings = Settings(spec_path=out.resolve())
    suite = write_suite(settings)
    return {
        "spec": str(out.resolve()),
        "suite": str(suite),
        "features": [f["name"] for f in features],
        "left_out": left_out,
        "first_day": days.min(),
        "last_day": days.max(),
        "landing": str(lake.landing(settings, "YYYY-MM-DD")),
    }
