# Two commands for a fresh machine:  `make demo`  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.installed-runtime

.PHONY: setup demo test lint typecheck unit bench clean

# The demo needs only what fleetmine runs on (no test tools, no torch).
$(RUNTIME): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@du -sh $(VENV) | awk '{print "virtualenv: " $$1 " in $(VENV)"}'
	touch $(RUNTIME)

# The tests add the dev extras (pytest, moto, ruff, mypy, torch for wids, ...).
$(STAMP): $(RUNTIME)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(RUNTIME)
	$(BIN)/fleetmine demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/fleetmine bench --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
