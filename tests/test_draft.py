"""`airloop init`: a spec inferred from a file airloop did not write, and its suite, round-trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from foreign import day_rows, write_days

AIRLOOP = str(Path(sys.executable).with_name("airloop"))


def _airloop(*args: str, env_home: Path, spec: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "AIRLOOP_HOME": str(env_home)}
    if spec:
        env["AIRLOOP_SPEC_PATH"] = str(spec)
    return subprocess.run([AIRLOOP, *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def drafted(tmp_path_factory):
    root = tmp_path_factory.mktemp("draft")
    write_days(root / "home" / "landing", 10)
    out = _airloop(
        "init", "--from", str(root / "home" / "landing"), "--entity", "station", "--timestamp", "dteday",
        "--label", "busy", "--task", "binary_classification", "--name", "bikes",
        "--out", str(root / "specs" / "bikes.yaml"), "--json", env_home=root / "home",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return root, json.loads(out.stdout)


def test_init_infers_types_ranges_and_integer_coded_categories(drafted):
    from airloop.spec import load_spec

    root, result = drafted
    spec = load_spec(Path(result["spec"]))
    kinds = {f.name: f for f in spec.features}
    assert (spec.entity, spec.entity_dtype, spec.timestamp, spec.label) == ("station", "int", "dteday", "busy")
    assert kinds["weekday"].dtype == "category" and kinds["weekday"].categories == [str(d) for d in range(7)]
    assert kinds["weathersit"].categories == ["1", "2", "3"]
    assert kinds["hr"].dtype == "int" and kinds["hr"].min == 0 and kinds["hr"].max >= 23
    assert kinds["temp"].dtype == "float" and kinds["temp"].min >= 0
    assert Path(result["suite"]) == root / "specs" / "expectations" / "bikes.json", "the suite sits next to the spec"
    assert (result["first_day"], result["last_day"]) == ("2011-01-03", "2011-01-12")
    text = Path(result["spec"]).read_text()
    assert "widened by 10%" in text, "the spec says how it was inferred"


def test_the_suite_accepts_the_sample_and_rejects_a_value_outside_the_inferred_range(drafted):
    root, result = drafted
    day = root / "home" / "landing" / "ds=2011-01-05" / "export.csv"
    ok = _airloop("validate", str(day), "--date", "2011-01-05", env_home=root / "home", spec=Path(result["spec"]))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = pd.read_csv(day)
    bad.loc[3, "hum"] = 7.5  # humidity is a share: far outside what the sample showed
    bad.loc[4, "weekday"] = 9  # no such day
    bad_file = root / "bad.csv"
    bad.to_csv(bad_file, index=False)
    refused = _airloop(
        "validate", str(bad_file), "--date", "2011-01-05", env_home=root / "home", spec=Path(result["spec"])
    )
    assert refused.returncode == 1
    assert "hum" in refused.stdout and "weekday" in refused.stdout


def test_string_ids_are_kept_as_text_and_an_existing_spec_is_not_overwritten(tmp_path):
    sample = tmp_path / "sample.parquet"
    pd.concat([day_rows(pd.Timestamp("2011-03-01").date(), station="S-007")]).to_parquet(sample, index=False)
    args = ["init", "--from", str(sample), "--entity", "station", "--timestamp", "dteday", "--label", "busy"]
    args += ["--task", "binary_classification", "--name", "kiosk", "--out", str(tmp_path / "kiosk.yaml")]
    assert _airloop(*args, env_home=tmp_path / "home").returncode == 0
    assert "entity_dtype: string" in (tmp_path / "kiosk.yaml").read_text()
    again = _airloop(*args, env_home=tmp_path / "home")
    assert again.returncode == 2 and "exists: review and edit it, or pass --force" in again.stderr


def test_a_label_that_is_not_0_1_is_refused_with_what_it_holds(tmp_path):
    rows = day_rows(pd.Timestamp("2011-03-01").date()).assign(busy=lambda d: d["busy"] + 1)
    rows.to_csv(tmp_path / "s.csv", index=False)
    out = _airloop(
        "init", "--from", str(tmp_path / "s.csv"), "--entity", "station", "--timestamp", "dteday", "--label", "busy",
        "--task", "binary_classification", "--name", "x", "--out", str(tmp_path / "x.yaml"), env_home=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and "must be 0/1" in out.stderr and "[1, 2]" in out.stderr


def test_a_sample_without_the_label_column_drafts_a_spec_whose_suite_expects_none(tmp_path, monkeypatch):
    """Outcomes that only arrive later (the label feed): the daily files have no label column at all."""
    monkeypatch.setenv("AIRLOOP_LABEL_SOURCE", "feed")  # the tests' default is batch
    day = pd.Timestamp("2011-03-01").date()
    day_rows(day).drop(columns=["busy"]).to_csv(tmp_path / "s.csv", index=False)
    out = _airloop(
        "init", "--from", str(tmp_path / "s.csv"), "--entity", "station", "--timestamp", "dteday", "--label", "busy",
        "--task", "binary_classification", "--name", "feedonly", "--out", str(tmp_path / "f.yaml"), env_home=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "label_in_batch: false" in (tmp_path / "f.yaml").read_text()
    spec = tmp_path / "f.yaml"
    ok = _airloop("validate", str(tmp_path / "s.csv"), "--date", "2011-03-01", env_home=tmp_path, spec=spec)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    day_rows(day).to_csv(tmp_path / "with_label.csv", index=False)  # a label column the spec does not expect
    refused = _airloop(
        "validate", str(tmp_path / "with_label.csv"), "--date", "2011-03-01", env_home=tmp_path, spec=spec
    )
    assert refused.returncode == 1 and "busy" in refused.stdout
