"""The bad-input matrix: each bad batch gets a clear reason, is quarantined (or passed with a
recorded warning), leaves no partial output, and leaves other dates untouched."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airloop import lake
from airloop.ingest import ingest_batch
from airloop.lake import DATA_FILE
from airloop.quarantine import BatchQuarantined
from airloop.simulate import Scenario, simulate_day, write_landing
from airloop.validate import validate_batch

GOOD, DAY = "2026-01-02", "2026-01-03"


def _landing(settings, name: str) -> Path:
    folder = lake.landing(settings, DAY)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _csv(settings, df: pd.DataFrame, name: str = "batch.csv") -> None:
    df.to_csv(_landing(settings, name), index=False, date_format="%Y-%m-%dT%H:%M:%SZ")


def _day(settings, scenarios=()) -> pd.DataFrame:
    return simulate_day(date.fromisoformat(DAY), settings, [Scenario.parse(s) for s in scenarios])


def corrupt(settings):
    _landing(settings, "batch.parquet").write_bytes(b"PAR1 this is not parquet \x00\x01\x02")


def empty(settings):
    _landing(settings, "batch.csv").write_bytes(b"")


def truncated_parquet(settings):
    path = _landing(settings, "batch.parquet")
    _day(settings).to_parquet(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def header_only(settings):
    _csv(settings, _day(settings).head(0))


def missing_column(settings):
    _csv(settings, _day(settings).drop(columns=["region"]))


def renamed_column(settings):
    _csv(settings, _day(settings, [f"schema_break@{DAY}"]))


def extra_column(settings):
    _csv(settings, _day(settings).assign(coupon_code="XMAS"))


def wrong_dtype(settings):
    df = _day(settings).astype({"monthly_charges": "object"})
    df.loc[::7, "monthly_charges"] = "about 40"
    _csv(settings, df)


def nan_burst(settings):
    _csv(settings, _day(settings, [f"missing_burst@{DAY}"]))


def out_of_range(settings):
    df = _day(settings)
    df.loc[::50, "tenure_months"] = 999
    _csv(settings, df)


def duplicates(settings):
    _csv(settings, _day(settings, [f"duplicates@{DAY}"]))


def outside_the_day(settings):
    df = _day(settings)
    df.loc[:4, "event_timestamp"] += timedelta(days=1)  # from the future
    df.loc[5:9, "event_timestamp"] -= timedelta(days=2)  # from the past
    _csv(settings, df)


def wrong_encoding(settings):
    df = _day(settings)
    df.loc[0, "plan"] = "prémium"
    _landing(settings, "batch.csv").write_bytes(df.to_csv(index=False).encode("latin-1"))


MATRIX: list[tuple[Callable, list[str]]] = [
    (corrupt, ["unreadable input", "batch.parquet", "not a readable Parquet file"]),
    (empty, ["unreadable input", "batch.csv is empty"]),
    (truncated_parquet, ["unreadable input", "truncated or corrupt"]),
    (header_only, ["expect_table_row_count_to_be_between: observed 0"]),
    (missing_column, ["expect_table_columns_to_match_set", "region"]),
    (renamed_column, ["expect_table_columns_to_match_set", "monthly_charge", "tenure_months"]),
    (extra_column, ["expect_table_columns_to_match_set", "coupon_code"]),
    (wrong_dtype, ["expect_column_values_to_be_in_type_list on monthly_charges", "about 40"]),
    (nan_burst, ["expect_column_values_to_not_be_null on usage_hours_7d"]),
    (out_of_range, ["expect_column_values_to_be_between on tenure_months", "999"]),
    (duplicates, ["expect_compound_columns_to_be_unique", "customer_id"]),
    (outside_the_day, ["expect_column_values_to_be_between on event_timestamp", "observed 10"]),
    (wrong_encoding, ["unreadable input", "is not UTF-8", "re-export it as UTF-8"]),
]


def _snapshot(settings, ds: str) -> dict[str, bytes]:
    root = settings.lake_dir
    return {str(p.relative_to(root)): p.read_bytes() for p in root.glob(f"*/ds={ds}/*") if p.is_file()}


@pytest.fixture
def good_day(settings):
    write_landing(date.fromisoformat(GOOD), settings)
    ingest_batch(settings, GOOD)
    validate_batch(settings, GOOD)
    return _snapshot(settings, GOOD)


@pytest.mark.parametrize("make_bad, words", MATRIX, ids=[m[0].__name__ for m in MATRIX])
def test_bad_batch_is_quarantined_with_a_clear_reason(settings, good_day, make_bad, words):
    make_bad(settings)
    with pytest.raises(BatchQuarantined) as err:
        ingest_batch(settings, DAY)
        validate_batch(settings, DAY)
    message = str(err.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    quarantine = lake.partition(settings, "quarantine", DAY)
    assert (quarantine / "REASON.txt").read_text().strip() == message
    assert (quarantine / DATA_FILE).exists() or any((quarantine / "files").iterdir())
    # nothing downstream, no temp files, the good day untouched
    assert not lake.partition(settings, "validated", DAY).exists()
    assert not (lake.data_file(settings, "features", DAY)).exists()
    assert not list(settings.lake_dir.rglob(".*tmp*"))
    assert _snapshot(settings, GOOD) == good_day


def test_blocked_batch_has_its_data_docs_page(settings):
    nan_burst(settings)
    ingest_batch(settings, DAY)
    with pytest.raises(BatchQuarantined, match="Data Docs: ") as err:
        validate_batch(settings, DAY)
    page = Path(str(err.value).split("Data Docs: ")[1].strip())
    assert page.is_file() and page.is_relative_to(lake.partition(settings, "quarantine", DAY))
    assert "usage_hours_7d" in page.read_text()
    assert (lake.partition(settings, "quarantine", DAY) / "data_docs" / "static").is_dir()


def test_small_nan_burst_passes_with_a_recorded_warning(settings):
    df = _day(settings)
    df.loc[np.arange(len(df)) % 25 == 0, "usage_hours_7d"] = np.nan  # 4%: above warn, below block
    _csv(settings, df)
    ingest_batch(settings, DAY)
    result = validate_batch(settings, DAY)
    assert result["success"] and len(result["warnings"]) == 1
    assert "expect_column_values_to_not_be_null on usage_hours_7d" in result["warnings"][0]
    recorded = json.loads((lake.partition(settings, "validated", DAY) / "validation.json").read_text())
    assert [w["column"] for w in recorded["warnings"]] == ["usage_hours_7d"]
    assert not lake.partition(settings, "quarantine", DAY).exists()


def test_a_day_with_no_file_is_a_clear_error(settings, good_day):
    with pytest.raises(FileNotFoundError, match=f"no landing batch for {DAY}: no \\*.csv or \\*.parquet under"):
        ingest_batch(settings, DAY)
    assert not lake.partition(settings, "raw", DAY).exists()
    assert _snapshot(settings, GOOD) == good_day


def test_many_files_per_day_csv_and_parquet(settings):
    df = _day(settings)
    half = len(df) // 2
    _csv(settings, df.iloc[:half], "part-1.csv")
    df.iloc[half:].to_parquet(_landing(settings, "part-2.parquet"))
    summary = ingest_batch(settings, DAY)
    assert summary["rows"] == len(df) and len(summary["sources"]) == 2
    assert validate_batch(settings, DAY)["success"]
