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
	@# The official Node SDK, for tests/relay/test_node_sdk.py (skipped without node/npm).
	@if command -v npm >/dev/null; then npm ci --silent --no-audit --no-fund --prefix tests/relay/node || echo "npm ci failed: the Node SDK test will be skipped"; fi
	@touch $(STAMP)

# Node tools for the browser tests (axe-core, pinned in package.json); skipped without npm.
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --no-audit --no-fund --no-package-lock --silent && touch $(NODE_STAMP); \
	else echo "npm not found: the accessibility tests will be skipped"; fi

install: $(STAMP) $(NODE_STAMP) ## Create the virtualenv and install everything

run: $(STAMP) ## Run the service on PORT (8000); unconfigured: embedded Postgres (stopped on exit) and the emulator on EMULATOR_PORT (8010); both ports must be free
	$(BIN)/aai-proxy serve

test: $(STAMP) $(NODE_STAMP) ## Run the tests (TEST_DATABASE_URL, or an embedded Postgres)
	$(BIN)/python scripts/run_tests.py $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy (strict) and the benchmarks type-checked against the app
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --config-file bench/mypy.ini bench/*.py

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
