# The two commands of the README, each installing what it needs into .venv first.
#   make materialize   full materialization on the embedded defaults (SQLite demo source, DuckDB)
#   make ui            the Dagster UI on the same code location
# Only these two commands fall back to the embedded demo source (CREDITS_SOURCE_URL=demo) when
# CREDITS_SOURCE_URL is unset; the code location itself refuses to load without a URL.
#   make test          the whole test suite (what CI runs)
#   make check         ruff (lint + format), mypy and `dg check defs` (CI runs it before make test)
# Dependencies are locked with hashes: requirements.lock (runtime: all that make materialize/ui
# install) and requirements-test.lock (only what the test/tooling extras add on top of it, resolved
# against its pins; installed after it, in a second pip call: pip's hash mode rejects the two in one
# call, as it cannot match dagster-graphql's `gql[requests]` to the pinned gql then).
# `make lock` regenerates both from pyproject.toml with uv (a maintainer's tool, not needed here).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
UV ?= uv
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DAGSTER_DISABLE_TELEMETRY := yes

.PHONY: install install-test materialize test check lock ui bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) requirements-test.lock
	$(BIN)/pip install --quiet --require-hashes -r requirements-test.lock
	touch $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

materialize: $(STAMP)
	CREDITS_SOURCE_URL=$${CREDITS_SOURCE_URL:-demo} $(BIN)/credits-pipeline materialize

test: $(TEST_STAMP)
	bash .ci/install-browser      # Debian's chromium + chromium-driver (pytest -m browser)
	bash .ci/install-bqemulator   # the BigQuery emulator in its own venv (pytest -m bigquery)
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder -ra

# The code location refuses to load without a source URL: the checks load it on the demo source.
check: $(TEST_STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	CREDITS_SOURCE_URL=$${CREDITS_SOURCE_URL:-demo} VIRTUAL_ENV=$(CURDIR)/$(VENV) \
	$(BIN)/dg check defs --use-active-venv

lock:
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(UV) pip compile --quiet pyproject.toml $(LOCK_TARGET) \
	  -o requirements.lock
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(UV) pip compile --quiet pyproject.toml --extra test $(LOCK_TARGET) \
	  -c requirements.lock -o requirements-test.lock \
	  $$(sed -n 's/^\([A-Za-z0-9._-]*\)==.*/--no-emit-package \1/p' requirements.lock)

ui: $(STAMP)
	CREDITS_SOURCE_URL=$${CREDITS_SOURCE_URL:-demo} \
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/data/dagster_home} $(BIN)/dagster dev -w workspace.yaml

bench: $(STAMP)
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/reconcile.py

clean:
	rm -rf data dbt_transform/target dbt_transform/logs
