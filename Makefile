# The two commands of the README, each installing what it needs into .venv first.
#   make materialize   full materialization on the embedded defaults (SQLite demo source, DuckDB)
#   make ui            the Dagster UI on the same code location
# Only these two commands fall back to the embedded demo source (CREDITS_SOURCE_URL=demo) when
# CREDITS_SOURCE_URL is unset; the code location itself refuses to load without a URL.
#   make test          the whole test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DAGSTER_DISABLE_TELEMETRY := yes

.PHONY: install materialize test ui bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

materialize: $(STAMP)
	CREDITS_SOURCE_URL=$${CREDITS_SOURCE_URL:-demo} $(BIN)/credits-pipeline materialize

test: $(STAMP)
	bash .ci/install-browser      # Debian's chromium + chromium-driver (pytest -m browser)
	bash .ci/install-bqemulator   # the BigQuery emulator in its own venv (pytest -m bigquery)
	$(BIN)/pytest -n 2 --dist loadfile -ra

ui: $(STAMP)
	CREDITS_SOURCE_URL=$${CREDITS_SOURCE_URL:-demo} \
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/data/dagster_home} $(BIN)/dagster dev -w workspace.yaml

bench: $(STAMP)
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/reconcile.py

clean:
	rm -rf data dbt_transform/target dbt_transform/logs
