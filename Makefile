# agistack: the two commands are `make dev` and `make test`. Each sets itself up (venv, pip, npm),
# idempotently: set-up steps rerun only when pyproject.toml or package*.json change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
NODE_ENV_VARS := CDK_DISABLE_CLI_TELEMETRY=true NPM_CONFIG_UPDATE_NOTIFIER=false WRANGLER_SEND_METRICS=false \
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
LINT_PATHS := shared functions edge_workers devstack cdk tests benchmarks

.PHONY: setup browser dev test test-fast lint typecheck synth smoke clean

setup: $(STAMPS)/python $(STAMPS)/node

$(STAMPS)/python: pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'pip<26.3'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

$(STAMPS)/node: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## The whole platform, locally, on embedded defaults.
dev: setup
	$(BIN)/agistack dev

## Debian's headless Chromium for the status page's browser test: installed when missing and we are
## root (CI); otherwise, or when apt fails, that test skips and says why. Never playwright's download.
browser:
	@test -x /usr/bin/chromium || { test "$$(id -u)" = 0 && DEBIAN_FRONTEND=noninteractive apt-get update -q \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
		|| echo "chromium not installed: the browser test will skip"

## The whole test suite: lint, types, tests.
test: setup browser lint typecheck
	$(NODE_ENV_VARS) $(BIN)/python -m pytest

## What needs no server (no PostgreSQL, Redis or moto): seconds, for the edit-test loop.
test-fast: setup
	$(NODE_ENV_VARS) $(BIN)/python -m pytest -m "not servers and not e2e" --deselect tests/edge/test_edge_conformance.py

lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/lint-imports --no-cache

typecheck: setup
	$(BIN)/mypy $(LINT_PATHS)

synth: setup
	$(NODE_ENV_VARS) npx cdk synth -q --no-notices

smoke: setup
	$(BIN)/agistack smoke

clean:
	rm -rf $(STAMPS) cdk.out .cache/lambda-layers dist build .mypy_cache .ruff_cache
