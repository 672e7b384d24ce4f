# `make demo` and `make test` work on a fresh clone with only Python 3.11 installed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_EVENTS ?= 200000

.PHONY: demo test compile lint clean

$(BIN)/cdp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/cdp

demo: $(BIN)/cdp
	rm -f data/acme.duckdb data/acme.duckdb.wal
	$(BIN)/python -m cdp_warehouse.demo data/demo_events.jsonl --events $(DEMO_EVENTS)
	$(BIN)/cdp validate
	$(BIN)/cdp load data/demo_events.jsonl --source demo
	$(BIN)/cdp run
	$(BIN)/cdp preview high_value_user
	$(BIN)/cdp preview churn_risk
	@echo
	@echo "Open the Dagster UI on this project: DAGSTER_HOME=$$PWD/dagster_home $(BIN)/dagster dev -m cdp_warehouse.definitions"
	@echo "(then http://127.0.0.1:3000; syncs need the destinations' variables, see docs/sync.md)"

test: $(BIN)/cdp
	$(BIN)/python -m pytest

compile: $(BIN)/cdp
	for dialect in duckdb snowflake bigquery postgres; do $(BIN)/cdp compile --dialect $$dialect --out sql; done

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
