# Task runner for totesys_assets: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TOTESYS_HOME ?= .totesys

.PHONY: help setup dev test coverage check lint format typecheck security scan bench dashboard reset

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup:  ## create .venv and install the project with its dev tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"

dev:  ## the UI and daemon on the embedded demo (persistent instance under $(TOTESYS_HOME))
	$(BIN)/totesys-dev

dashboard:  ## the Streamlit dashboard on http://127.0.0.1:8501
	$(BIN)/totesys-dashboard

test:  ## the whole suite (real PostgreSQL, S3 API and Dagster processes; no services to install)
	$(BIN)/pytest

coverage:  ## the suite with line coverage of totesys_assets (fails under 90%)
	$(BIN)/pytest --cov=totesys_assets --cov-report=term-missing:skip-covered --cov-fail-under=90

lint:  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck:  ## mypy over the package
	$(BIN)/mypy totesys_assets

security:  ## bandit over the package (medium severity and above)
	$(BIN)/bandit -q -r totesys_assets -ll -c pyproject.toml

scan:  ## checkov over deploy/terraform (its own virtualenv)
	bash deploy/terraform/scan.sh

check: lint typecheck security scan  ## everything CI checks besides the tests

bench:  ## the benchmark at x1, x10 and x100 (run it alone on the machine)
	$(BIN)/pip install -e ".[dev,bench]"
	$(BIN)/python bench/run.py --scale 1 --scale 10 --scale 100

reset:  ## stop the embedded PostgreSQL and empty the demo source, warehouse, lake and Dagster instance
	TOTESYS_HOME=$(TOTESYS_HOME) $(BIN)/python -m totesys_assets.embedded stop
	rm -rf $(TOTESYS_HOME)
