"""The one settings object: documented in the README (a stale table fails here), checked when it loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airloop.config import Settings, settings_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_settings_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- settings:begin[^>]*-->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert block, "README.md lost its settings block markers"
    assert block.group(1).strip() == settings_table().strip(), (
        "README's settings table is stale: paste the output of `airloop settings` between the markers"
    )


def _environment_reads_of_airloop_variables(path: Path) -> list[str]:
    """``os.environ[...]``, ``os.environ.get(...)``, ``os.getenv(...)`` (any spelling that names ``environ`` or
    ``getenv``) of a literal ``AIRLOOP_*`` name, or an f-string starting with it; also a scan of the environment
    for the ``AIRLOOP_`` prefix (``k.startswith("AIRLOOP_")`` in a module that touches ``environ``)."""
    import ast

    text = path.read_text()
    tree, touches_environ = ast.parse(text, str(path)), "environ" in text or "getenv" in text

    def airloop_name(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value.startswith("AIRLOOP_")
        if isinstance(node, ast.JoinedStr) and node.values:
            return airloop_name(node.values[0])
        return False

    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(tree):
        target, args = None, []
        if isinstance(node, ast.Subscript):
            target, args = node.value, [node.slice]
        elif isinstance(node, ast.Call):
            target, args = node.func, node.args
            if touches_environ and isinstance(target, ast.Attribute) and target.attr == "startswith":
                args = [a for arg in args for a in (arg.elts if isinstance(arg, ast.Tuple) else [arg])]
                if any(airloop_name(a) for a in args):
                    found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
                continue
        if target is not None and any(w in ast.unparse(target) for w in ("environ", "getenv")):
            if any(airloop_name(a) for a in args):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_but_the_settings_object_reads_airloop_variables_from_the_environment(tmp_path):
    """README (Configuration): every AIRLOOP_* variable is a field of airloop.config.Settings and nothing else
    reads one, so each is checked at load and listed in the table. The scan itself is checked on a sample."""
    config = ROOT / "include" / "airloop" / "config.py"
    files = [p for part in ("include", "dags", "plugins") for p in sorted((ROOT / part).rglob("*.py")) if p != config]
    assert len(files) > 30
    reads = [hit for path in files for hit in _environment_reads_of_airloop_variables(path)]
    assert reads == [], f"read these through get_settings() (add a Settings field) instead: {reads}"

    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom os import environ, getenv\n"
        "a = os.environ['AIRLOOP_X']\nb = os.environ.get('AIRLOOP_Y', '1')\nc = getenv(f'AIRLOOP_{a}')\n"
        "d = [k for k in environ if k.startswith(('AWS_', 'AIRLOOP_'))]\ne = os.environ.get('HOME')\n"
    )
    assert [h.split(":")[1] for h in _environment_reads_of_airloop_variables(sample)] == ["3", "4", "5", "6"]


def test_every_setting_says_what_it_is_for():
    assert not [name for name, f in Settings.model_fields.items() if not f.description], "add a docstring"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"AIRLOOP_MIN_TRAIN_DAYS": "3"}, r"AIRLOOP_MIN_TRAIN_DAYS \(3\) must exceed AIRLOOP_HOLDOUT_DAYS"),
        ({"AIRLOOP_MIN_TRAIN_DAYS": "40"}, r"cannot exceed AIRLOOP_TRAIN_WINDOW_DAYS \(30\)"),
        ({"AIRLOOP_PRIMARY_METRIC": "r2"}, r"AIRLOOP_PRIMARY_METRIC='r2' is not a higher-is-better metric of binary"),
        ({"AIRLOOP_PRIMARY_METRIC": "vibes"}, r"AIRLOOP_PRIMARY_METRIC='vibes' is unknown"),
        ({"AIRLOOP_MODEL_TYPE": "ridge"}, r"AIRLOOP_MODEL_TYPE='ridge' does not fit binary_classification"),
        ({"AIRLOOP_GATE_CONFIDENCE": "0.2"}, r"AIRLOOP_GATE_CONFIDENCE must be in \(0.5, 1\)"),
    ],
)
def test_settings_that_cannot_work_stop_at_load_naming_the_variables(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        Settings()


def test_as_env_hands_on_what_was_set_and_the_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRLOOP_LABEL_SOURCE")  # set for the test session (conftest)
    monkeypatch.delenv("AIRLOOP_METRICS_EXPORT")  # likewise
    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path))
    monkeypatch.setenv("AIRLOOP_GATE_RULES", '["floor", "min_rows"]')
    env = Settings().as_env()
    assert env == {"AIRLOOP_HOME": str(tmp_path), "AIRLOOP_GATE_RULES": '["floor", "min_rows"]'}
    monkeypatch.delenv("AIRLOOP_GATE_RULES")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings().gate_rules == ["floor", "min_rows"]


def test_the_home_is_the_project_folder_make_uses(monkeypatch):
    monkeypatch.delenv("AIRLOOP_HOME", raising=False)
    makefile = (ROOT / "Makefile").read_text()
    assert "export AIRLOOP_HOME ?= $(ROOT)/.airloop" in makefile
    assert Settings().home == ROOT / ".airloop"


def test_the_model_and_feast_objects_are_named_after_the_dataset(monkeypatch):
    monkeypatch.setenv("AIRLOOP_SPEC_PATH", str(ROOT / "include/airloop/specs/store_demand.yaml"))
    s = Settings()
    assert (s.registered_model, s.spec.feature_view_name, s.spec.feature_service_name) == (
        "airloop_store_demand",
        "store_demand_fv",
        "store_demand_v1",
    )
    assert s.suite_path == ROOT / "include/airloop/specs/expectations/store_demand.json"
