"""Validate: check a raw partition with Great Expectations; pass it on or quarantine it."""

from __future__ import annotations

import logging
import shutil
from typing import Any

import pandas as pd

from airloop.config import Settings
from airloop.spec import DatasetSpec
from airloop.storage import DATA_FILE, write_json, write_parquet, write_text

NUMERIC_TYPES = ["int64", "Int64", "int32", "float64", "Float64"]


class BatchQuarantined(RuntimeError):
    """A batch failed blocking expectations and was moved to quarantine."""


def _import_gx() -> Any:
    """Import great_expectations without its INFO log flood (see library-facts)."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx


def build_suite(spec: DatasetSpec) -> Any:
    """The default expectation suite derived from the dataset spec."""
    gx = _import_gx()
    import great_expectations.expectations as gxe

    exps: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=spec.columns, exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=spec.rows_per_day.min, max_value=spec.rows_per_day.max),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[spec.entity, spec.timestamp]),
        gxe.ExpectColumnValuesToNotBeNull(column=spec.entity),
        gxe.ExpectColumnValuesToNotBeNull(column=spec.timestamp),
        gxe.ExpectColumnValuesToNotBeNull(column=spec.label),
    ]
    if spec.task == "binary_classification":
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=spec.label, value_set=[0, 1]))
    for f in spec.features:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=f.name))
        if f.dtype == "category":
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=f.name, value_set=f.categories))
        else:
            exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=f.name, type_list=NUMERIC_TYPES))
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min, max_value=f.max))
    suite = gx.ExpectationSuite(name=f"{spec.name}_suite")
    for e in exps:
        suite.add_expectation(e)
    return suite


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
        "column": cfg.kwargs.get("column") or cfg.kwargs.get("column_list"),
        "success": bool(r.success),
        "observed": observed,
        "unexpected_percent": res.get("unexpected_percent"),
        "partial_unexpected": [str(v) for v in (res.get("partial_unexpected_list") or [])[:5]],
    }


def check_frame(df: pd.DataFrame, spec: DatasetSpec) -> dict:
    """Validate a data frame against the spec's suite; return a JSON-ready, time-free summary."""
    gx = _import_gx()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("airloop")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    result = batch.validate(build_suite(spec))
    results = [_describe(r) for r in result.results]
    return {
        "success": bool(result.success),
        "evaluated": len(results),
        "failed": [r for r in results if not r["success"]],
        "results": results,
    }


def explain(summary: dict) -> str:
    """The failed expectations in plain words, one per line."""
    lines = []
    for f in summary["failed"]:
        where = f" on {f['column']}" if f["column"] else ""
        extra = f" (e.g. {', '.join(f['partial_unexpected'])})" if f["partial_unexpected"] else ""
        lines.append(f"- {f['expectation']}{where}: observed {f['observed']}{extra}")
    return "\n".join(lines)


def validate_batch(settings: Settings, ds: str) -> dict:
    """Validate ``raw/ds=<ds>``. Pass: write ``validated/ds=<ds>``. Fail: write the batch, its
    validation result and a readable reason to ``quarantine/ds=<ds>`` and raise BatchQuarantined."""
    raw = settings.partition("raw", ds) / DATA_FILE
    if not raw.exists():
        raise FileNotFoundError(f"no raw partition for {ds} at {raw}: run ingestion first")
    df = pd.read_parquet(raw)
    summary = {"ds": ds, **check_frame(df, settings.spec)}
    validated, quarantine = settings.partition("validated", ds), settings.partition("quarantine", ds)
    if summary["success"]:
        shutil.rmtree(quarantine, ignore_errors=True)
        write_json(summary, validated / "validation.json")
        write_parquet(df, validated / DATA_FILE)
        return {"ds": ds, "success": True, "rows": len(df), "path": str(validated / DATA_FILE)}

    shutil.rmtree(validated, ignore_errors=True)
    reason = explain(summary)
    write_json(summary, quarantine / "validation.json")
    write_text(f"Batch {ds} failed validation and was quarantined.\n{reason}\n", quarantine / "REASON.txt")
    write_parquet(df, quarantine / DATA_FILE)
    raise BatchQuarantined(
        f"batch {ds} quarantined at {quarantine}: {len(summary['failed'])} of {summary['evaluated']} "
        f"expectations failed:\n{reason}"
    )
