"""DAG integrity: importable, acyclic, tagged, retried, and cheap to parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ["great_expectations", "mlflow", "feast", "evidently", "sklearn"]
EXPECTED = {"airloop_daily", "airloop_monitor", "airloop_release", "airloop_rollback", "airloop_train"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_dags_import_without_errors(dagbag):
    assert not dagbag.import_errors, f"fix these DAG import errors: {dagbag.import_errors}"
    assert set(dagbag.dags) == EXPECTED


def test_dags_are_acyclic_tagged_owned_and_retried(dagbag):
    for dag_id, dag in dagbag.dags.items():
        dag.check_cycle()  # raises AirflowDagCycleException naming the cycle
        assert "airloop" in dag.tags, f"{dag_id}: add the 'airloop' tag"
        assert dag.doc_md, f"{dag_id}: give it a doc_md (module docstring)"
        assert dag.on_failure_callback, f"{dag_id}: use DAG_DEFAULTS (its failure callback alerts on killed tasks)"
        for t in dag.tasks:
            assert t.owner == "airloop", f"{dag_id}.{t.task_id}: owner"
            assert t.retries >= 1, f"{dag_id}.{t.task_id}: set retries (dag_defaults) so transient errors heal"
            assert t.on_failure_callback, f"{dag_id}.{t.task_id}: use dag_defaults() (failure alert email)"


@pytest.mark.parametrize("image", ["", "airloop:0.1.0"], ids=["in-worker", "containerised"])
@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_does_not_import_heavy_libraries(path, image):
    """In both training modes (AIRLOOP_CONTAINER_IMAGE unset / set); the docker SDK only when the mode is on."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"print(json.dumps([m for m in {[*HEAVY, 'docker']!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "AIRLOOP_CONTAINER_IMAGE": image}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    expected = ["docker"] if image and path.name == "airloop_train.py" else []
    assert loaded == expected, f"{path.name} imports {loaded} at parse time: move the import inside the task function"
