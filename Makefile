# Inflow's developer commands. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help install up demo test lint bench clean lock

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/inflow: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,dev]'
	@touch $@

install: $(BIN)/inflow  ## create .venv and install Inflow with its test and dev tools

up: install  ## start local Kafka, S3 and every component in the foreground (Ctrl-C stops all)
	$(BIN)/inflow up

demo: install  ## `make up` plus sample data through every component to a local receiver (inflow up --demo)
	$(BIN)/inflow up --demo

test: install  ## run the whole test suite against a real local Kafka broker and S3 server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install  ## run every benchmark in bench/ against the local broker (prints figures beside raw baselines)
	$(BIN)/inflow kafka start
	@for b in bench/*_bench.py; do m=$$(basename $$b .py); echo "== $$m"; \
	  KAFKA_BOOTSTRAP_SERVERS=$${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092} $(BIN)/python -m bench.$$m || exit 1; done

lock: install  ## re-resolve requirements.lock from pyproject.toml (after changing a dependency)
	$(BIN)/uv pip compile pyproject.toml --extra test --extra dev --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu -o requirements.lock

clean:  ## remove local state (.inflow) and the venv
	rm -rf .inflow $(VENV)
