# Every entry point of the propensity service. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 1313
WORKERS ?= 2
REPLICAS ?= 2
COVERAGE_FLOOR ?= 92
export PROPENSITY_ARTIFACTS_DIR ?= $(CURDIR)/artifacts

# `$(call given,PORT,--port)` is `--port $(PORT)` when PORT was given on make's command line or in the
# environment, and nothing when it is only this file's default: `make serve` then leaves the port to the
# PROPENSITY_* settings (PROPENSITY_PORT=1515 make serve listens on 1515).
given = $(if $(filter command line environment,$(origin $(1))),$(2) $($(1)))

.DEFAULT_GOAL := help
.PHONY: help venv system-deps serve test test-unit test-integration chaos lint fmt bench clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'
	@echo "variables: PORT WORKERS (serve, up), REPLICAS, PYTEST_ARGS, COVERAGE_FLOOR=$(COVERAGE_FLOOR), BENCH_ARGS"

$(BIN)/propensity: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (make system-deps)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

venv: $(BIN)/propensity ## build .venv from the lock file

system-deps: ## the Debian packages the tests need, when missing (apt-get as root, else the command to run)
	PYTHON=$(PYTHON) bash tools/system-deps.sh test

serve: venv ## serve the approved model (PROPENSITY_* settings; PORT=, WORKERS= override them; no Redis)
	$(strip $(BIN)/propensity serve $(call given,PORT,--port) $(call given,WORKERS,--workers))

lint: venv ## import-linter contracts, ruff (C901 <= 12), ruff format, mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check service tools tests
	$(BIN)/ruff format --check service tools tests
	$(BIN)/mypy service tools tests

fmt: venv ## format the code
	$(BIN)/ruff format service tools tests
	$(BIN)/ruff check --fix service tools tests

test: system-deps venv lint ## lint, then every test but the Docker Swarm suite, with the coverage of service/
	$(BIN)/pytest -m "not swarm" --cov=service --cov-report=term-missing:skip-covered \
	  --cov-fail-under=$(COVERAGE_FLOOR) $(PYTEST_ARGS)

test-unit: venv ## tests/unit only (no lint, no coverage)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: system-deps venv ## tests/integration: real gunicorn, redis-server, nginx, prometheus
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

chaos: system-deps venv ## the chaos suite: each fault under a bounded load, a table of the outcomes (in make test too)
	$(BIN)/pytest tests/integration/chaos $(PYTEST_ARGS)

bench: venv ## the benchmark: ratios measured side by side in one run (not a test)
	$(BIN)/python -m tools.bench.run $(BENCH_ARGS)

# Docker image targets (wheels, base-image, image, hadolint) and the local cluster (up, down, status).
-include deploy/docker/docker.mk
-include deploy/cluster/cluster.mk
-include deploy/swarm/swarm.mk

clean: ## remove caches (keeps .venv and artifacts)
	rm -rf .mypy_cache .ruff_cache .hypothesis .coverage build *.egg-info
