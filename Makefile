# The two commands of the quickstart: `make demo` and `make test`.
# Both create the virtual environment on first use (about a minute).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY ?= true
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION ?= false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false
export GIT_PYTHON_REFRESH ?= quiet
export BENTOML_DO_NOT_TRACK ?= true

.PHONY: demo test test-unit test-integration reliability lint format bench clean env

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## the end-to-end demo on embedded defaults
	$(BIN)/modelcanary demo

test: $(STAMP)  ## lint, then every test (unit and integration)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

test-integration: $(STAMP)
	$(BIN)/pytest -m integration

reliability: $(STAMP)  ## faults injected for real, security rules, fuzzing (see RELIABILITY.md)
	$(BIN)/pytest -m reliability

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	mkdir -p out
	$(BIN)/python benchmarks/decision_quality.py --trials 500 --json out/decision_quality.json
	$(BIN)/python benchmarks/control_latency.py --trials 30 --json out/control_latency.json
	$(BIN)/python benchmarks/evaluator_throughput.py --events 100000 --json out/evaluator_throughput.json
	$(BIN)/python benchmarks/serving_overhead.py --json out/serving_overhead.json

clean:
	rm -rf $(VENV) .modelcanary .pytest_cache .ruff_cache
