# Two commands for a fresh machine:  `make demo`  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.installed-runtime

.PHONY: setup demo test quick lint typecheck unit bench clean

# pytest workers: one more than the cores (a test waiting on a Ray node or a subprocess
# leaves its core to another), at most 4 (each may hold a local Ray and a fleet). Two more
# than the cores was no faster on 2 cores (CI, 2026-12-07: 496 tests done by 629 s against
# 514 with three workers): the run is bound by its CPU.
WORKERS ?= $(shell n=$$(( $$(nproc 2>/dev/null || echo 2) + 1 )); [ $$n -gt 4 ] && n=4; echo $$n)
# modules are units of work (their fixtures build once), `long` tests first: tests/conftest.py
PYTEST_PAR := -n $(WORKERS)

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

# Bytecode is written while the tests run, whatever the environment says: the suite starts
# some 700 Python processes (decoder children, CLI commands, jobs, Ray workers), and with
# PYTHONDONTWRITEBYTECODE set (this machine's image sets it) each compiled every module it
# imported again, and each pytest worker rewrote every test module's asserts again.
#
# OpenMP threads (FAISS, ONNX Runtime) wait for work passively: the suite runs more workers
# than cores, and a thread spinning for its next parallel region takes the core from a test
# that has work (tests/mining/test_index_search.py: 54 -> 36 s of CPU beside a CI run).
TEST_ENV := env -u PYTHONDONTWRITEBYTECODE OMP_WAIT_POLICY=PASSIVE
#
# Tests marked `alone` time answers against a bound (the load test: 200 clients, 2 s): they
# run by themselves first, with every core and thread the machine has. In the parallel run,
# beside the acceptance fleets and the Ray clusters, the load test's own client was
# descheduled long enough to push 84-151 answers past 2 s (CI, 2026-12-07).
#
# The parallel run computes on one thread per process (OpenMP, OpenBLAS, MKL: FAISS, numpy,
# ONNX Runtime, torch, and Arrow's CPU pool, which follows OMP_NUM_THREADS), as Ray's
# workers already do: three workers share two cores, so a second thread only queues for a
# core the other workers are using (CI, 2026-12-07: 945 -> 820 s).
ONE_THREAD := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

unit: $(STAMP)
	$(TEST_ENV) $(BIN)/pytest -q -m alone
	$(TEST_ENV) $(ONE_THREAD) $(BIN)/pytest -q $(PYTEST_PAR) -m 'not alone' --durations=10

# the inner loop: everything but the `long` tests (acceptance fleets, clusters, load)
quick: $(STAMP)
	$(TEST_ENV) $(BIN)/pytest -q $(PYTEST_PAR) -m 'not long'

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/fleetmine bench --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
