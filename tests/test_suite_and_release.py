"""The reviewable suite file and the release of a fixed quarantined batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from airloop import lake
from airloop.config import PACKAGE_DIR
from airloop.ingest import ingest_batch
from airloop.quarantine import BatchQuarantined
from airloop.release import release_batch
from airloop.simulate import Scenario, write_landing
from airloop.validate import validate_batch, write_suite

DAY = "2026-01-03"
HAND_WRITTEN = {
    "type": "expect_column_mean_to_be_between",
    "kwargs": {"column": "monthly_charges", "min_value": 10, "max_value": 200},
    "meta": {"owner": "data-team", "notes": "added by hand"},
    "severity": "warning",
}


@pytest.mark.parametrize("spec_path", [PACKAGE_DIR / "dataset.yaml", PACKAGE_DIR / "specs" / "store_demand.yaml"])
def test_committed_suite_is_what_the_generator_writes(tmp_path, monkeypatch, spec_path):
    from airloop.spec import load_spec

    committed = spec_path.parent / "expectations" / f"{load_spec(spec_path).name}.json"
    monkeypatch.setenv("AIRLOOP_SPEC_PATH", str(spec_path))
    monkeypatch.setenv("AIRLOOP_SUITE_DIR", str(tmp_path))
    from airloop.config import get_settings

    shutil.copy(committed, tmp_path / committed.name)
    write_suite(get_settings())
    assert (tmp_path / committed.name).read_text() == committed.read_text(), "run `airloop suite` and commit"


def test_regenerating_keeps_hand_written_expectations(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLOOP_SUITE_DIR", str(tmp_path))
    from airloop.config import get_settings

    s = get_settings()
    path = write_suite(s)
    suite = json.loads(path.read_text())
    suite["expectations"].append(HAND_WRITTEN)
    path.write_text(json.dumps(suite))
    write_suite(s)
    again = json.loads(path.read_text())["expectations"]
    assert HAND_WRITTEN in again
    assert sum(e.get("meta") == {"generated_by": "airloop"} for e in again) == len(suite["expectations"]) - 1
    # and the hand-written warning is really evaluated: mean of charges far above 200 warns, not blocks
    write_landing(date.fromisoformat(DAY), s, [Scenario.parse(f"covariate_shift@{DAY}")])
    df = pd.read_csv(lake.landing(s, DAY) / "batch.csv")
    df["monthly_charges"] = (df["monthly_charges"] * 3).clip(upper=499)
    df.to_csv(lake.landing(s, DAY) / "batch.csv", index=False)
    ingest_batch(s, DAY)
    result = validate_batch(s, DAY)
    assert result["success"] and any("expect_column_mean_to_be_between" in w for w in result["warnings"])


def _quarantine_a_bad_day(settings) -> None:
    write_landing(date.fromisoformat(DAY), settings, [Scenario.parse(f"duplicates@{DAY}")])
    ingest_batch(settings, DAY)
    with pytest.raises(BatchQuarantined):
        validate_batch(settings, DAY)


def test_release_refuses_an_unfixed_batch_and_accepts_a_fixed_one(settings):
    _quarantine_a_bad_day(settings)
    with pytest.raises(BatchQuarantined, match="expect_compound_columns_to_be_unique"):
        release_batch(settings, DAY)
    assert (
        lake.partition(settings, "quarantine", DAY).exists() and not lake.partition(settings, "validated", DAY).exists()
    )

    fixed = lake.data_file(settings, "quarantine", DAY)  # the operator fixes it in place
    df = pd.read_parquet(fixed).drop_duplicates(["customer_id", "event_timestamp"])
    df.to_parquet(fixed)
    result = release_batch(settings, DAY)
    assert result["released"] and result["rows"] == len(df)
    assert not lake.partition(settings, "quarantine", DAY).exists()
    validated = pd.read_parquet(lake.data_file(settings, "validated", DAY))
    assert len(validated) == len(df) and not validated.duplicated(["customer_id", "event_timestamp"]).any()


def test_release_command_with_a_fixed_file(settings, tmp_path):
    _quarantine_a_bad_day(settings)
    fixed = tmp_path / "fixed.csv"
    write_landing(date.fromisoformat(DAY), settings)  # the upstream team re-exported the day
    shutil.copy(lake.landing(settings, DAY) / "batch.csv", fixed)
    env = {**os.environ, "AIRLOOP_HOME": str(settings.home)}
    airloop = str(Path(sys.executable).with_name("airloop"))
    out = subprocess.run(
        [airloop, "release", "--date", DAY, "--path", str(fixed), "--json"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["released"] is True
    out = subprocess.run([airloop, "release", "--date", DAY], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "is not in quarantine" in out.stderr and "Traceback" not in out.stderr
