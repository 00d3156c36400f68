from datetime import date

import pandas as pd
import pytest

from airloop import lake
from airloop.ingest import ingest_batch
from airloop.lake import DATA_FILE
from airloop.quarantine import BatchQuarantined
from airloop.simulate import Scenario, write_landing
from airloop.validate import validate_batch

DAY = "2026-01-03"


def _files(settings, ds):
    names = [
        lake.data_file(settings, "raw", ds),
        lake.partition(settings, "raw", ds) / "_ingest.json",
        lake.data_file(settings, "validated", ds),
        lake.partition(settings, "validated", ds) / "validation.json",
    ]
    return {p.name + p.parent.parent.name: p.read_bytes() for p in names}


def test_rerun_gives_identical_bytes_and_no_duplicates(settings):
    landing = write_landing(date.fromisoformat(DAY), settings)
    ingest_batch(settings, DAY)
    assert validate_batch(settings, DAY)["success"]
    first = _files(settings, DAY)
    ingest_batch(settings, DAY)
    validate_batch(settings, DAY)
    assert _files(settings, DAY) == first
    validated = pd.read_parquet(lake.data_file(settings, "validated", DAY))
    assert len(validated) == len(pd.read_csv(landing))
    assert not validated.duplicated(["customer_id", "event_timestamp"]).any()
    assert str(validated["event_timestamp"].dt.tz) == "UTC"


def test_schema_break_is_quarantined_with_a_readable_reason(settings):
    write_landing(date.fromisoformat(DAY), settings, [Scenario.parse(f"schema_break@{DAY}")])
    summary = ingest_batch(settings, DAY)
    assert any("tenure_months" in n for n in summary["coercion_notes"])
    with pytest.raises(BatchQuarantined, match="quarantined") as err:
        validate_batch(settings, DAY)
    assert "monthly_charges" in str(err.value)
    quarantine = lake.partition(settings, "quarantine", DAY)
    reason = (quarantine / "REASON.txt").read_text()
    assert "expect_table_columns_to_match_set" in reason and "monthly_charges" in reason
    assert (quarantine / DATA_FILE).exists() and (quarantine / "validation.json").exists()
    assert not lake.partition(settings, "validated", DAY).exists()


def test_duplicates_and_missing_values_are_blocked(settings):
    day = date.fromisoformat(DAY)
    write_landing(day, settings, [Scenario.parse(f"duplicates@{DAY}"), Scenario.parse(f"missing_burst@{DAY}")])
    ingest_batch(settings, DAY)
    with pytest.raises(BatchQuarantined) as err:
        validate_batch(settings, DAY)
    text = str(err.value)
    assert "expect_compound_columns_to_be_unique" in text
    assert "expect_column_values_to_not_be_null on usage_hours_7d" in text


def test_missing_landing_batch_is_a_clear_error(settings):
    with pytest.raises(FileNotFoundError, match="no landing batch for 2026-02-01"):
        ingest_batch(settings, "2026-02-01")


def test_backfill_twice_over_a_range_never_duplicates_rows(settings):
    days = ["2026-01-02", "2026-01-03", "2026-01-04"]
    landed = sum(len(pd.read_csv(write_landing(date.fromisoformat(d), settings))) for d in days)
    for _ in range(2):
        for d in days:
            ingest_batch(settings, d)
            validate_batch(settings, d)

    rows = lake.read(settings, "validated", days)
    assert len(rows) == landed
    assert not rows.duplicated(["customer_id", "event_timestamp"]).any()


def test_every_validation_run_is_kept_in_the_data_docs_site(settings):
    for d in ["2026-01-02", "2026-01-03"]:
        write_landing(date.fromisoformat(d), settings)
        ingest_batch(settings, d)
        assert validate_batch(settings, d)["data_docs"].startswith(str(settings.data_docs_dir))
    index = (settings.data_docs_dir / "index.html").read_text()
    assert "2026-01-02" in index and "2026-01-03" in index
