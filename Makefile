# make run / make test work on a fresh clone with only Python installed: the virtualenv
# and the dependencies are created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test lint fmt migrate bench install worker emulator

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,emulator,recognition]'
	@touch $(STAMP)

install: $(STAMP) ## Create the virtualenv and install everything

run: $(STAMP) ## Run the service (embedded Postgres and the emulator when unconfigured)
	$(BIN)/aai-proxy serve

test: $(STAMP) ## Run the tests (TEST_DATABASE_URL, or an embedded Postgres)
	$(BIN)/python scripts/run_tests.py $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP) ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(STAMP) ## Apply database migrations
	$(BIN)/aai-proxy migrate

worker: $(STAMP) ## Run the reconciler alone
	$(BIN)/aai-proxy worker

emulator: $(STAMP) ## Run the AssemblyAI emulator alone on :8010
	$(BIN)/aai-proxy emulator --port 8010

bench: $(STAMP) ## Run every benchmark (each prints name: value lines)
	@set -e; for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done
