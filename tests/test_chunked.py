"""A day ingested and validated in many small chunks gives the same result as in one chunk."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airloop import lake
from airloop.ingest import ingest_batch
from airloop.quarantine import BatchQuarantined
from airloop.simulate import simulate_day
from airloop.validate import validate_batch

DAY = "2026-01-03"
ONE_CHUNK, SMALL = 1_000_000, 37  # 600 rows: one chunk, or 17 chunks over two files


def _land(settings, df: pd.DataFrame) -> None:
    """Half the day as CSV, half as Parquet (with a pandas index column), as two landing files."""
    folder = lake.landing(settings, DAY)
    folder.mkdir(parents=True, exist_ok=True)
    half = len(df) // 2
    df.iloc[:half].to_csv(folder / "part-1.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    df.iloc[half:].set_index(pd.Index(np.arange(half, len(df)) * 3)).to_parquet(folder / "part-2.parquet")


def _run(settings, monkeypatch, chunk_rows: int) -> tuple[pd.DataFrame, dict, dict]:
    """Ingest and validate the day with ``chunk_rows``: (raw rows, ingest summary, validation summary)."""
    monkeypatch.setenv("AIRLOOP_CHUNK_ROWS", str(chunk_rows))
    from airloop.config import get_settings

    s = get_settings()
    ingested = ingest_batch(s, DAY)
    raw = pd.read_parquet(lake.data_file(s, "raw", DAY))
    try:
        page = Path(validate_batch(s, DAY)["data_docs"])
        checked = json.loads((lake.partition(s, "validated", DAY) / "validation.json").read_text())
        assert pd.read_parquet(lake.data_file(s, "validated", DAY)).equals(raw)
    except BatchQuarantined as err:
        page = Path(str(err).split("Data Docs: ")[1].strip())
        checked = json.loads((lake.partition(s, "quarantine", DAY) / "validation.json").read_text())
        assert pd.read_parquet(lake.data_file(s, "quarantine", DAY)).equals(raw)
    assert page.is_file() and "support_calls_30d" in page.read_text()  # the Data Docs page
    # which path ran: a day larger than chunk_rows is validated in chunks (its own Data Docs batch id)
    assert ("daily_batch-chunked" in str(page)) is (len(raw) > chunk_rows), page
    for key in ("sha256", "path"):  # the row groups differ with the chunk size, the rows do not
        ingested.pop(key)
    return raw, ingested, checked


def _flawed_day(settings) -> pd.DataFrame:
    """Flaws that only show in late chunks: a bad number, a null integer, a duplicate across the
    files, an extra column in the second file only."""
    df = simulate_day(date.fromisoformat(DAY), settings).astype({"monthly_charges": "object"})
    df.loc[250, "monthly_charges"] = "about 40"
    df["support_calls_30d"] = df["support_calls_30d"].astype("Int64")
    df.loc[590, "support_calls_30d"] = pd.NA
    df.loc[599, ["customer_id", "event_timestamp"]] = df.loc[1, ["customer_id", "event_timestamp"]].to_numpy()
    df.loc[450:, "coupon_code"] = "XMAS"
    return df


@pytest.mark.parametrize("flawed", [False, True], ids=["clean", "flawed"])
def test_many_chunks_equal_one_chunk(settings, monkeypatch, flawed):
    df = _flawed_day(settings) if flawed else simulate_day(date.fromisoformat(DAY), settings)
    _land(settings, df)
    raw, ingested, checked = _run(settings, monkeypatch, ONE_CHUNK)
    raw_small, ingested_small, checked_small = _run(settings, monkeypatch, SMALL)
    pd.testing.assert_frame_equal(raw_small, raw)
    assert ingested_small == ingested and checked_small == checked
    assert len(raw) == len(df) and checked["success"] is not flawed
    if flawed:
        assert str(raw["monthly_charges"].dtype) == "string" and str(raw["support_calls_30d"].dtype) == "Int64"
        assert "column 'monthly_charges' is not float: 'about 40' at row 250" in ingested["coercion_notes"]
        failed = {(f["expectation"], str(f["column"])) for f in checked["failed"]}
        assert ("expect_compound_columns_to_be_unique", "['customer_id', 'event_timestamp']") in failed
        assert ("expect_column_values_to_not_be_null", "support_calls_30d") in failed
        assert ("expect_table_columns_to_match_set", "None") in failed


def test_hand_written_column_uniqueness_over_buckets(settings, monkeypatch, tmp_path):
    """A hand-written ``expect_column_values_to_be_unique`` (warning) is checked on hash buckets of its
    column in a chunked day: the same duplicate count as over the whole day, and the buckets a killed
    run left behind are cleared."""
    from airloop.config import get_settings

    df = simulate_day(date.fromisoformat(DAY), settings)
    df.loc[590:, "customer_id"] = df.loc[:9, "customer_id"].to_numpy()  # 10 ids seen twice, far apart
    _land(settings, df)
    suite = json.loads(settings.suite_path.read_text())
    monkeypatch.setenv("AIRLOOP_SUITE_DIR", str(tmp_path / "suite"))  # an edited copy of the package's suite
    settings = get_settings()
    settings.suite_path.parent.mkdir()
    unique = {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "customer_id"}, "severity": "warning"}
    suite["expectations"].append({**unique, "meta": {"owner": "analyst"}})
    settings.suite_path.write_text(json.dumps(suite))
    index = len(suite["expectations"]) - 1  # its bucket folder is named after its place in the suite
    leftover = settings.staging_dir / "validate" / f"ds={DAY}" / f"unique-{index}" / "bucket-0000.parquet"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"left by a killed run")
    found = {}
    for chunk_rows in (ONE_CHUNK, SMALL):
        _, _, checked = _run(settings, monkeypatch, chunk_rows)
        (warning,) = [w for w in checked["warnings"] if w["expectation"] == unique["type"]]
        found[chunk_rows] = warning
    # the examples come bucket by bucket, not in row order: the same count, other duplicates shown
    examples = {k: set(found[k].pop("partial_unexpected")) for k in found}
    assert found[SMALL] == found[ONE_CHUNK]
    assert found[SMALL]["observed"] == int(df["customer_id"].duplicated(keep=False).sum()) >= 20
    twice = set(df.loc[df["customer_id"].duplicated(keep=False), "customer_id"].astype(str))
    assert examples[SMALL] <= twice and examples[ONE_CHUNK] <= twice and len(examples[SMALL]) >= 3
    assert not [p for p in settings.staging_dir.rglob("*") if p.is_file()]


def test_features_split_by_entity_equal_the_whole_window(settings, monkeypatch):
    """A window larger than chunk_rows is aggregated in entity buckets: the same feature rows (in
    another order) and the same online values as one in-memory pass; a rerun gives the same bytes."""
    from airloop.config import get_settings
    from airloop.features import materialize_features, online_features
    from airloop.simulate import simulate

    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    simulate(date(2026, 1, 1), 3, settings)
    for d in days:
        ingest_batch(settings, d)
        validate_batch(settings, d)
    results = {}
    for chunk_rows in (ONE_CHUNK, 250):  # 1,800 window rows: one pass, or 8 buckets
        monkeypatch.setenv("AIRLOOP_CHUNK_ROWS", str(chunk_rows))
        s = get_settings()
        for folder in (s.feast_dir, lake.zone_dir(s, "features")):  # each pass from the validated days alone
            shutil.rmtree(folder, ignore_errors=True)
        summary = [materialize_features(s, d) for d in days][-1]
        path = lake.data_file(s, "features", DAY)
        first = path.read_bytes()
        materialize_features(s, DAY)
        assert path.read_bytes() == first
        feats = pd.read_parquet(path).sort_values(["customer_id", "event_timestamp"], ignore_index=True)
        online = online_features(s, feats["customer_id"].tolist()).sort_values("customer_id", ignore_index=True)
        results[chunk_rows] = summary, feats, online
    (one, one_feats, one_online), (many, many_feats, many_online) = results[ONE_CHUNK], results[250]
    timing = ("seconds",)  # the one field that differs by design (how long it took)
    assert {k: v for k, v in many.items() if k not in timing} == {k: v for k, v in one.items() if k not in timing}
    assert one["rows"] == 600 and one["entities"] == 600
    pd.testing.assert_frame_equal(many_feats, one_feats)
    pd.testing.assert_frame_equal(many_online, one_online)
    assert one_online["tenure_months"].notna().all()
    assert not [p for p in s.staging_dir.rglob("*") if p.is_file()]  # the buckets are gone
