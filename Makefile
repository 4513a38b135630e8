# worksession: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the service with its dev tools

.PHONY: run
run: $(STAMP) ## Start the service on the embedded default (SQLite + in-process broker) on :8000
	$(BIN)/worksession serve

.PHONY: test
test: $(STAMP) ## Run the tests (also on PostgreSQL/Redis when WORKSESSION_TEST_*_URL are set)
	$(BIN)/pytest

.PHONY: lint
lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict on src/
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

.PHONY: bench
bench: $(STAMP) ## Benchmarks on PostgreSQL + Redis: table, bench/results/*.json, docs/benchmarks.md
	$(BIN)/python -m bench $(if $(ONLY),--only $(ONLY))

.PHONY: fuzz
fuzz: $(STAMP) ## Fuzz a live server with 10,000 hostile frames (FRAMES=n to change; PostgreSQL + Redis when WORKSESSION_TEST_*_URL are set)
	WORKSESSION_FUZZ_FRAMES=$(or $(FRAMES),10000) $(BIN)/pytest -s -q tests/realtime/test_fuzz.py

.PHONY: format
format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

.PHONY: migrate
migrate: $(STAMP) ## Bring the configured database to the newest schema
	$(BIN)/worksession migrate

.PHONY: clean
clean: ## Remove .venv, caches and the embedded database
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache worksession.db worksession.db-wal worksession.db-shm
