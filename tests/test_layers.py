"""The layers: import-linter's contracts (pyproject.toml) hold, and fail when broken; DAG files and plugins
import only downward (dags -> plugins -> airloop), which import-linter cannot check (they are not packages)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint(include: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(include), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", str(ROOT / "pyproject.toml")], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_the_contracts_hold():
    out = _lint(ROOT / "include")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "0 broken" in out.stdout


def test_a_core_module_importing_a_stage_breaks_a_contract(tmp_path):
    """A copy of the packages in which the dataset spec (core) imports the monitor (a stage): refused."""
    include = tmp_path / "include"
    shutil.copytree(ROOT / "include", include, ignore=shutil.ignore_patterns("__pycache__"))
    spec = include / "airloop" / "spec.py"
    spec.write_text(spec.read_text() + "\nfrom airloop.monitor import run_checks  # noqa: E402,F401\n")
    out = _lint(include)
    assert out.returncode != 0
    assert "airloop.spec -> airloop.monitor" in out.stdout


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_dags_and_plugins_import_only_downward():
    dags = {p.stem for p in (ROOT / "dags").glob("*.py")}
    plugins = {p.stem for p in (ROOT / "plugins").glob("*.py")}
    for path in (ROOT / "plugins").glob("*.py"):
        assert not _imports(path) & (dags | {"airloop_tools"}), f"{path.name}: a plugin imports a DAG or the tools"
    for path in (ROOT / "dags").glob("*.py"):
        assert not _imports(path) & (dags | {"airloop_tools"}), f"{path.name}: a DAG imports another DAG or the tools"
        assert _imports(path) & (plugins | {"airloop"}), f"{path.name}: a DAG's logic lives in plugins/ and airloop"
