# Every entry point of the propensity service. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 1313
WORKERS ?= 2
REPLICAS ?= 2
export PROPENSITY_ARTIFACTS_DIR ?= $(CURDIR)/artifacts

.DEFAULT_GOAL := help
.PHONY: help venv serve test test-unit test-integration lint fmt bench clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/propensity: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

venv: $(BIN)/propensity ## build .venv from the lock file

serve: venv ## serve the approved model on :1313 (imports it on an empty registry; no Redis)
	$(BIN)/propensity serve --port $(PORT) --workers $(WORKERS)

lint: venv ## import-linter contracts, ruff (C901 <= 12), ruff format, mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check service tools tests
	$(BIN)/ruff format --check service tools tests
	$(BIN)/mypy service

fmt: venv ## format the code
	$(BIN)/ruff format service tools tests
	$(BIN)/ruff check --fix service tools tests

test: venv lint ## lint, then every test but the Docker Swarm suite
	$(BIN)/pytest -m "not swarm" $(PYTEST_ARGS)

test-unit: venv ## fast unit tests only
	$(BIN)/pytest -m "not swarm and not integration and not slow" $(PYTEST_ARGS)

bench: venv ## the benchmark: ratios measured side by side in one run (not a test)
	$(BIN)/python -m tools.bench.run $(BENCH_ARGS)

# Docker image targets (wheels, base-image, image, hadolint) and the local cluster (up, down, status).
-include deploy/docker/docker.mk
-include deploy/cluster/cluster.mk
-include deploy/swarm/swarm.mk

clean: ## remove caches (keeps .venv and artifacts)
	rm -rf .mypy_cache .ruff_cache .hypothesis build *.egg-info
