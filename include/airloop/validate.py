"""Validate: check a raw partition against the expectation suite; pass it on or quarantine it.

The suite lives in a reviewable JSON file (``settings.suite_path``). ``write_suite`` regenerates
the expectations derived from the dataset spec (marked ``meta.generated_by: airloop``) and keeps
every expectation a person added by hand. Severity is GX's own: ``critical`` expectations block
the batch (quarantine), ``warning``/``info`` ones let it through with a recorded warning.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from airloop import lake
from airloop.config import Settings
from airloop.quarantine import quarantine_batch
from airloop.spec import DatasetSpec
from airloop.storage import atomic_path, exclusive, iter_batches, split_by_key, write_json

NUMERIC_TYPES = ["int64", "Int64", "int32", "float64", "Float64"]
GENERATED = {"generated_by": "airloop"}
BLOCK, WARN = "critical", "warning"
# BASIC keeps what our messages use (observed value, unexpected counts, up to 20 examples) and is
# ~1.7x faster than GX's default SUMMARY on 1 M rows (bench/validation_throughput.py)
RESULT_FORMAT = "BASIC"
# A day larger than ``settings.chunk_rows`` is validated in parts. These expectations give one verdict
# per row, so their counts over the day are the sums of their counts over its chunks (GX validates
# each chunk; ``_merge`` applies GX's own success rule to the sums); the pandas type checks compare
# the column's dtype, the same in every chunk of one Parquet file.
ROW_LEVEL = {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex",
    "expect_column_values_to_be_in_type_list",
    "expect_column_values_to_be_of_type",
}
# These look at the column names only: GX checks them on the day's schema (no rows).
SCHEMA_LEVEL = {
    "expect_table_columns_to_match_set",
    "expect_table_columns_to_match_ordered_list",
    "expect_table_column_count_to_equal",
    "expect_table_column_count_to_be_between",
    "expect_column_to_exist",
}
# Uniqueness over these columns: rows with equal values share a bucket of a hash split of the day, so
# GX checks each bucket alone and ``_merge`` sums the counts (its examples then come bucket by bucket,
# not in row order). Every other expectation (row count, hand-written aggregates) sees the whole day
# at once, read with only the columns it names.
KEYED = {"expect_compound_columns_to_be_unique": "column_list", "expect_column_values_to_be_unique": "column"}


def _import_gx() -> Any:
    """Import great_expectations without its INFO log flood (see library-facts)."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx


def generate_expectations(spec: DatasetSpec) -> list[Any]:
    """The expectations derived from the dataset spec, as GX expectation objects."""
    import great_expectations.expectations as gxe

    def e(cls: Any, severity: str = BLOCK, **kwargs: Any) -> Any:
        return cls(**kwargs, meta=dict(GENERATED), severity=severity)

    exps = [
        e(gxe.ExpectTableColumnsToMatchSet, column_set=spec.columns, exact_match=True),
        e(gxe.ExpectTableRowCountToBeBetween, min_value=spec.rows_per_day.min, max_value=spec.rows_per_day.max),
        e(gxe.ExpectCompoundColumnsToBeUnique, column_list=[spec.entity, spec.timestamp]),
        e(gxe.ExpectColumnValuesToNotBeNull, column=spec.entity),
        e(gxe.ExpectColumnValuesToNotBeNull, column=spec.timestamp),
        # freshness: every event inside the logical date's interval (parameters set per run)
        e(
            gxe.ExpectColumnValuesToBeBetween,
            column=spec.timestamp,
            min_value={"$PARAMETER": "interval_start"},
            max_value={"$PARAMETER": "interval_end"},
            strict_max=True,
        ),
    ]
    if spec.label_in_batch:
        exps += [
            e(gxe.ExpectColumnValuesToNotBeNull, column=spec.label),
            e(gxe.ExpectColumnValuesToBeInTypeList, column=spec.label, type_list=NUMERIC_TYPES),
        ]
    if spec.label_in_batch and spec.task == "binary_classification":
        exps.append(e(gxe.ExpectColumnValuesToBeInSet, column=spec.label, value_set=[0, 1]))
    elif spec.label_in_batch and (spec.label_min is not None or spec.label_max is not None):
        exps.append(
            e(gxe.ExpectColumnValuesToBeBetween, column=spec.label, min_value=spec.label_min, max_value=spec.label_max)
        )
    for f in spec.features:
        exps.append(e(gxe.ExpectColumnValuesToNotBeNull, column=f.name, mostly=1.0 - f.max_missing))
        if f.warn_missing is not None and f.warn_missing < f.max_missing:
            exps.append(e(gxe.ExpectColumnValuesToNotBeNull, WARN, column=f.name, mostly=1.0 - f.warn_missing))
        if f.dtype == "category":
            exps.append(e(gxe.ExpectColumnValuesToBeInSet, column=f.name, value_set=f.categories))
        else:
            exps.append(e(gxe.ExpectColumnValuesToBeInTypeList, column=f.name, type_list=NUMERIC_TYPES))
            exps.append(e(gxe.ExpectColumnValuesToBeBetween, column=f.name, min_value=f.min, max_value=f.max))
    return exps


def _strip_ids(d: dict) -> dict:
    return {k: v for k, v in d.items() if not (k == "id" and v is None)}


def write_suite(settings: Settings) -> Path:
    """(Re)generate the spec-derived part of the suite file, keeping hand-written expectations."""
    gx = _import_gx()
    path = settings.suite_path
    kept: list[dict] = []
    if path.exists():
        kept = [x for x in json.loads(path.read_text())["expectations"] if x.get("meta") != GENERATED]
    generated = [_strip_ids(x.configuration.to_json_dict()) for x in generate_expectations(settings.spec)]
    suite = _strip_ids(gx.ExpectationSuite(name=f"{settings.spec.name}_suite").to_json_dict())
    suite.pop("meta", None)  # holds the GX version: keep the file stable across upgrades
    suite["expectations"] = generated + kept
    return write_json(suite, path)


def suite_file(settings: Settings) -> Path:
    """The suite file, generated from the spec the first time it is needed (then it is yours to review)."""
    path = settings.suite_path
    if not path.exists():
        write_suite(settings)
        logging.getLogger(__name__).warning("no expectation suite at %s: generated it from the dataset spec", path)
    return path


def load_suite(settings: Settings) -> Any:
    """The suite from its file."""
    gx = _import_gx()
    return gx.ExpectationSuite(**json.loads(suite_file(settings).read_text()))


def interval(ds: str) -> dict[str, str]:
    """Suite parameters of a logical date: its interval [start, end) in UTC."""
    start = datetime.combine(date.fromisoformat(ds), datetime.min.time(), tzinfo=UTC)
    return {"interval_start": start.isoformat(), "interval_end": (start + timedelta(days=1)).isoformat()}


def _describe(r: Any) -> dict:
    cfg = r.expectation_config
    res = r.result or {}
    observed = res.get("observed_value", res.get("unexpected_count"))
    # GX gives one exception dict, or a dict of them keyed by metric (e.g. a missing column)
    info = r.exception_info or {}
    for exc in [info] if "raised_exception" in info else info.values():
        if exc.get("raised_exception"):
            observed = (exc.get("exception_message") or "error").splitlines()[0][:200]
    return {
        "expectation": cfg.type,
        "severity": str(getattr(cfg.severity, "value", cfg.severity) or BLOCK),
        "column": cfg.kwargs.get("column") or cfg.kwargs.get("column_list"),
        "success": bool(r.success),
        "observed": observed,
        "unexpected_percent": res.get("unexpected_percent"),
        "partial_unexpected": [str(v) for v in (res.get("partial_unexpected_list") or [])[:5]],
    }


def summarize(result: Any) -> dict:
    """A JSON-ready, time-free summary: blocking failures and warnings in separate lists."""
    results = [_describe(r) for r in result.results]
    failed = [r for r in results if not r["success"]]
    blocked = [r for r in failed if r["severity"] == BLOCK]
    return {
        "success": not blocked,
        "evaluated": len(results),
        "failed": blocked,
        "warnings": [r for r in failed if r["severity"] != BLOCK],
        "results": results,
    }


def _ephemeral_batches(gx: Any) -> Any:
    """A whole-dataframe batch definition in an ephemeral GX context (nothing is written)."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    return (
        context.data_sources.add_pandas("airloop")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
    )


def check_frame(settings: Settings, df: pd.DataFrame, ds: str) -> dict:
    """Validate a frame against the suite for logical date ``ds`` in an ephemeral GX context
    (what ``airloop validate`` uses: nothing is written)."""
    batch = _ephemeral_batches(_import_gx()).get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(load_suite(settings), expectation_parameters=interval(ds), result_format=RESULT_FORMAT)
    return summarize(result)


def gx_lock(settings: Settings) -> Path:
    """The lock file of the GX project under the home (see ``storage.exclusive``)."""
    return settings.home / "gx" / ".airloop.lock"


def run_checkpoint(settings: Settings, df: pd.DataFrame, ds: str) -> tuple[dict, str | None]:
    """Validate through a GX Checkpoint in the file context under ``home/gx``: the result is kept
    and rendered into the Data Docs site, so every run's validation can be browsed later.
    Returns the summary and the path of this run's Data Docs page."""
    gx = _import_gx()
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    with exclusive(gx_lock(settings)):  # one writer of the GX project at a time
        context = gx.get_context(mode="file", project_root_dir=str(settings.home))
        context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
        source = context.data_sources.add_or_update_pandas("airloop")
        asset = next((a for a in source.assets if a.name == "daily_batch"), None) or source.add_dataframe_asset(
            "daily_batch"
        )
        batch_def = next((b for b in asset.batch_definitions if b.name == "whole"), None)
        batch_def = batch_def or asset.add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add_or_update(load_suite(settings))
        vd = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name="airloop_daily_batch", data=batch_def, suite=suite)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name="airloop_daily",
                validation_definitions=[vd],
                actions=[UpdateDataDocsAction(name="docs")],
                result_format=RESULT_FORMAT,
            )
        )
        run = checkpoint.run(
            batch_parameters={"dataframe": df}, expectation_parameters=interval(ds), run_id=RunIdentifier(run_name=ds)
        )
        (identifier, result), *_ = run.run_results.items()
        urls = context.get_docs_sites_urls(resource_identifier=identifier)
        page = urls[0]["site_url"].removeprefix("file://") if urls else None
        return summarize(result), page


def _merge(parts: list[Any]) -> Any:
    """One row-level expectation's result over the day from its results over the chunks: counts
    summed, the first 20 unexpected values, and GX's success rule (``mostly`` of the non-null rows,
    of all rows for not-null; vacuously true without rows)."""
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.expectations.expectation import _format_map_output
    from great_expectations.expectations.expectation_configuration import parse_result_format

    first = parts[0]
    if _raised(first) or "unexpected_count" not in (first.result or {}):
        # a dtype-level check (the same in every chunk) or an error (e.g. a missing column)
        return next((p for p in parts if not p.success), first)
    cfg = first.expectation_config
    total = sum(p.result["element_count"] for p in parts)
    unexpected = sum(p.result["unexpected_count"] for p in parts)
    not_null = cfg.type == "expect_column_values_to_not_be_null"
    considered = total if not_null else total - sum(p.result["missing_count"] for p in parts)
    success = considered == 0 or (considered - unexpected) / considered >= cfg.kwargs.get("mostly", 1.0)
    out = _format_map_output(
        result_format=parse_result_format(RESULT_FORMAT),
        success=success,
        element_count=total,
        nonnull_count=None if not_null else considered,
        unexpected_count=unexpected,
        unexpected_list=[v for p in parts for v in p.result["partial_unexpected_list"]],
    )
    return ExpectationValidationResult(
        success=success, expectation_config=cfg, result=out["result"], exception_info=first.exception_info
    )


@contextmanager
def _without_fingerprints() -> Iterator[None]:
    """Skip GX's fingerprint of each frame (a hash of every row of any frame under 1 GB, kept in the
    batch markers, which the merged result does not keep): for the day group's row count alone it
    costs +230 MB at 10 M rows, and time on every part."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    threshold, engine.HASH_THRESHOLD = engine.HASH_THRESHOLD, 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = threshold


def run_chunked(settings: Settings, raw: Path, ds: str) -> tuple[dict, str | None]:
    """Validate a day too large for one frame, with memory flat in its size for the row-level and
    uniqueness expectations: each chunk of ``chunk_rows`` rows through GX, results merged; each
    uniqueness expectation on the buckets of a hash split by its columns, merged the same way; the
    column-set expectations on the schema; the rest on the whole day read with only the columns they
    name. The merged result is stored and rendered in the Data Docs site like a Checkpoint's."""
    import pyarrow.parquet as pq

    gx = _import_gx()
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    suite = json.loads(suite_file(settings).read_text())
    groups: dict[str, list[int]] = {"rows": [], "schema": [], "day": []}
    keyed: dict[str, list[str]] = {}  # group of one uniqueness expectation -> its key columns
    file = pq.ParquetFile(raw)
    for i, e in enumerate(suite["expectations"]):
        keys = _names(e["kwargs"].get(KEYED.get(e["type"], "")))
        if keys and set(keys) <= set(file.schema_arrow.names):
            groups[f"unique {i}"], keyed[f"unique {i}"] = [i], keys
        else:
            groups["rows" if e["type"] in ROW_LEVEL else "schema" if e["type"] in SCHEMA_LEVEL else "day"].append(i)
    batches = _ephemeral_batches(gx)

    def check(group: str, df: pd.DataFrame) -> list[Any]:
        part = gx.ExpectationSuite(
            name=f"{suite['name']}_{group}", expectations=[suite["expectations"][i] for i in groups[group]]
        )
        batch = batches.get_batch(batch_parameters={"dataframe": df})
        return batch.validate(part, expectation_parameters=interval(ds), result_format=RESULT_FORMAT).results

    def merged(group: str, frames: Iterator[pd.DataFrame]) -> dict[int, Any]:
        parts = [check(group, df) for df in frames] if groups[group] else []
        return dict(zip(groups[group], map(_merge, zip(*parts, strict=True)), strict=True)) if parts else {}

    with _without_fingerprints():
        results = merged("rows", (b.to_pandas() for b in iter_batches(file, settings.chunk_rows)))
        buckets = -(-file.metadata.num_rows // settings.chunk_rows)
        for group, keys in keyed.items():
            folder = lake.staging(settings, "validate", ds) / group.replace(" ", "-")
            with split_by_key([raw], keys, keys, buckets, folder, settings.chunk_rows) as paths:
                results.update(merged(group, (pd.read_parquet(p) for p in paths)))
        results.update(zip(groups["schema"], check("schema", file.schema_arrow.empty_table().to_pandas()), strict=True))
        if groups["day"]:
            named = {
                c
                for i in groups["day"]
                for k in ("column", "column_list", "column_A", "column_B")
                for c in _names(suite["expectations"][i]["kwargs"].get(k))
            }
            columns = [c for c in file.schema_arrow.names if c in named]
            day = (
                pq.read_table(raw, columns=columns).to_pandas()
                if columns
                else pd.DataFrame(index=pd.RangeIndex(file.metadata.num_rows))
            )
            results.update(zip(groups["day"], check("day", day), strict=True))
    # GX's order: the expectations that raised an error first, then the others, each in suite order
    ordered = sorted((results[i] for i in range(len(suite["expectations"]))), key=lambda r: not _raised(r))
    stats = calc_validation_statistics(ordered)
    merged = ExpectationSuiteValidationResult(
        success=stats.success,
        results=ordered,
        suite_name=suite["name"],
        suite_parameters=interval(ds),
        statistics=stats._asdict(),
        meta={"run_id": ds, "chunk_rows": settings.chunk_rows, "rows": file.metadata.num_rows},
    )
    key = ValidationResultIdentifier(
        ExpectationSuiteIdentifier(name=suite["name"]), RunIdentifier(run_name=ds), "airloop-daily_batch-chunked"
    )
    with exclusive(gx_lock(settings)):
        docs = gx.get_context(mode="file", project_root_dir=str(settings.home))
        docs.validation_results_store.set(key, merged)
        docs.build_data_docs(resource_identifiers=[key])
        urls = docs.get_docs_sites_urls(resource_identifier=key)
    return summarize(merged), urls[0]["site_url"].removeprefix("file://") if urls else None


def _raised(r: Any) -> bool:
    """Whether GX reports an error for this result (one exception dict, or one per metric)."""
    info = r.exception_info or {}
    return any(e.get("raised_exception") for e in ([info] if "raised_exception" in info else info.values()))


def _names(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def explain(summary: dict, key: str = "failed") -> str:
    """The failed expectations in plain words, one per line."""
    lines = []
    for f in summary[key]:
        where = f" on {f['column']}" if f["column"] else ""
        extra = f" (e.g. {', '.join(f['partial_unexpected'])})" if f["partial_unexpected"] else ""
        lines.append(f"- {f['expectation']}{where}: observed {f['observed']}{extra}")
    return "\n".join(lines)


def validate_batch(settings: Settings, ds: str) -> dict:
    """Validate the raw partition of ``ds``. Pass (warnings allowed): write its validated partition. Blocking
    failure: quarantine the batch with its result, reason and Data Docs page; raise BatchQuarantined."""
    raw = lake.data_file(settings, lake.RAW, ds)
    if not raw.exists():
        raise FileNotFoundError(f"no raw partition for {ds} at {raw}: run ingestion first")
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(raw).metadata.num_rows
    if rows > settings.chunk_rows:  # memory flat in the day's size (see ROW_LEVEL)
        checked, docs_page = run_chunked(settings, raw, ds)
    else:
        checked, docs_page = run_checkpoint(settings, pd.read_parquet(raw), ds)
    summary = {"ds": ds, **checked}
    validated = lake.partition(settings, lake.VALIDATED, ds)
    if not summary["success"]:
        ingest_notes = raw.parent / lake.INGEST_FILE
        notes = json.loads(ingest_notes.read_text())["coercion_notes"] if ingest_notes.exists() else []
        quarantine_batch(
            settings,
            ds,
            reason=f"{len(summary['failed'])} of {summary['evaluated']} blocking expectations failed:\n"
            f"{explain(summary)}" + "".join(f"\n- ingestion: {n}" for n in notes),
            data=raw,
            result=summary,
            docs_page=docs_page,
        )
    write_json(summary, validated / lake.VALIDATION_FILE)
    with atomic_path(validated / lake.DATA_FILE) as tmp:  # the same rows: copy the bytes, no second encode
        shutil.copyfile(raw, tmp)
    return {
        "ds": ds,
        "success": True,
        "rows": rows,
        "warnings": [f"{w['expectation']} on {w['column']}: observed {w['observed']}" for w in summary["warnings"]],
        "data_docs": docs_page,
        "path": str(validated / lake.DATA_FILE),
    }
