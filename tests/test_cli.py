"""The airloop console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from airloop.simulate import Scenario, write_landing

AIRLOOP = str(Path(sys.executable).with_name("airloop"))
SUBCOMMANDS = ["simulate", "validate", "suite", "release", "status", "features-env", "train"]


def _run(settings, *args):
    env = {**os.environ, "AIRLOOP_HOME": str(settings.home)}
    return subprocess.run([AIRLOOP, *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_has_help_and_json(settings, sub):
    out = _run(settings, sub, "--help")
    assert out.returncode == 0 and "--json" in out.stdout


def test_validate_passes_a_good_file_and_explains_a_bad_one(settings):
    good = write_landing(date(2026, 1, 2), settings)
    out = _run(settings, "validate", str(good), "--date", "2026-01-02")
    assert out.returncode == 0 and out.stdout.startswith("PASS")
    bad = write_landing(date(2026, 1, 3), settings, [Scenario.parse("schema_break@2026-01-03")])
    out = _run(settings, "validate", str(bad), "--date", "2026-01-03", "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["success"] is False
    assert any(f["expectation"] == "expect_table_columns_to_match_set" for f in report["failed"])


def test_status_json_on_an_empty_home(settings):
    out = _run(settings, "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["champion_version"] is None and status["quarantined"] == [] and status["retrains"] == []


def test_train_says_plainly_when_there_is_nothing_to_train_on(settings):
    out = _run(settings, "train", "--json")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"airloop train: error: no validated day under {settings.lake_dir / 'validated'} to train on yet"
    )
