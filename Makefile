# airloop: `make demo` runs the whole lifecycle on embedded defaults; `make test` runs the tests.
SHELL := /bin/bash
ROOT := $(CURDIR)
PYTHON ?= python3
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin

export AIRLOOP_HOME ?= $(ROOT)/.airloop
export AIRFLOW_HOME ?= $(AIRLOOP_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS := admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE := $(ROOT)/.airloop-passwords.json
export AIRFLOW__LOGGING__LOGGING_LEVEL := WARNING
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_LOGGING_LEVEL := WARNING
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export FEAST_USAGE := False
export PYTHONWARNINGS := ignore
export PATH := $(BIN):$(PATH)
MLFLOW_HOST ?= 127.0.0.1

.PHONY: install demo run test test-fast test-production lint bench settings airflow mlflow-ui serve status clean

install: $(VENV)/.installed  ## create .venv from uv.lock (installs uv if absent)

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@UV=$$(command -v uv || echo "$(PYTHON) -m uv"); $$UV sync --frozen --python 3.11 --quiet --compile-bytecode
	@touch $@

$(ROOT)/.airloop-passwords.json:
	@echo '{"admin": "admin"}' > $@

demo: install $(ROOT)/.airloop-passwords.json  ## a fresh demo home, 14 simulated days through the real DAGs, summary JSON
	@airloop demo $(DEMO_ARGS)

run: install $(ROOT)/.airloop-passwords.json  ## your landing days FROM..TO through the real DAGs (resumable)
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make run FROM=YYYY-MM-DD TO=YYYY-MM-DD"; exit 2; }
	@airloop run --from $(FROM) --to $(TO) $(RUN_ARGS)

test: install  ## lint + layer contracts + the full test suite, slow end-to-end tests included (CI runs exactly this)
	@ruff check . && ruff format --check --quiet . && lint-imports --no-cache >/dev/null
	@pytest $(PYTEST_ARGS)

test-fast: install  ## skip the slow end-to-end tests
	@pytest -m "not slow" $(PYTEST_ARGS)

test-production: install  ## the production topology, live (its own PostgreSQL and Redis, with passwords) + compose/Dockerfile checks
	@pytest -s $(PYTEST_ARGS) tests/test_production_compose.py tests/test_production_topology.py

lint: install
	@ruff check . && ruff format --check . && lint-imports --no-cache

bench: install  ## all benchmarks, figures and ratios against same-run baselines, written to BENCHMARKS.md
	@python bench/run_all.py $(BENCH_ARGS)

settings: install  ## load airflow_settings.yaml (connections, variables, pools) into Airflow; idempotent
	@mkdir -p "$(AIRFLOW_HOME)" && airflow db migrate >/dev/null
	@airloop load-settings

airflow: settings $(ROOT)/.airloop-passwords.json  ## Airflow UI on the demo's state, on loopback (AIRFLOW__API__HOST to expose it)
	AIRFLOW__API__HOST=$${AIRFLOW__API__HOST:-127.0.0.1} airflow standalone

mlflow-ui: install  ## MLflow UI on the demo's state, on loopback (MLFLOW_HOST=0.0.0.0 to expose it)
	mlflow ui --host $(MLFLOW_HOST) --port 5000 --backend-store-uri "sqlite:///$(AIRLOOP_HOME)/mlflow/mlflow.db"

serve: install  ## real-time scoring service on the demo's state: http://127.0.0.1:8000/docs (needs AIRLOOP_SERVE_TOKEN)
	airloop serve $(SERVE_ARGS)

status: install
	@airloop status

clean:
	rm -rf "$(AIRLOOP_HOME)" .pytest_cache
