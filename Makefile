# podjobs: the README's commands. `make demo` and `make test` are all a fresh
# Debian machine needs; each installs what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: deps venv demo demo-sql test test-sql test-fast chaos lint lint-imports bench bench-peers bench-firstjob bench-scale up down status clean

deps: ## system packages (redis-server, mariadb-server, zookeeper, java), apt-get as root
	@bash infra/deps.sh

# `make test` and `make test-sql` run on TEST_WORKERS pytest-xdist workers (each its own process with
# its own session servers), a whole test file to a worker (--dist loadfile: module fixtures and
# file-ordered tests stay together). TEST_WORKERS=0: one process, as plain pytest.
# PYTEST_ARGS: more options for either (make test PYTEST_ARGS=--durations=25).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[api,test,dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: deps venv ## start a local 3-pod cluster, run a workload on it, stop it
	$(BIN)/python -m demo.run

demo-sql: deps venv ## a short tour on a cluster with no Redis: 2 pods on SQLite (dev up --backend sql)
	$(BIN)/python -m demo.sql_tour

test: deps venv ## the whole suite, on servers the tests start themselves (2 xdist workers)
	$(BIN)/python -m pytest -q $(XDIST)

test-sql: deps venv ## the backend-parametrised suites on MariaDB and PostgreSQL (make test runs redis + sqlite)
	PODJOBS_TEST_BACKENDS=all $(BIN)/python -m pytest -q $(XDIST) tests/test_queue.py tests/test_reliability.py \
		tests/test_sqlbackend.py tests/test_sqlops.py tests/test_iteration.py -k "mariadb or postgres"

test-fast: venv ## the pure tests (no servers), in seconds
	$(BIN)/python -m pytest -q tests/test_pure.py tests/test_*_pure.py

chaos: deps venv ## every chaos scenario, more jobs and runs: prints the table, writes tests/chaos/results/
	$(BIN)/python -m tests.chaos.runner

lint: venv lint-imports ## ruff, mypy --strict and the import-linter contracts
	$(BIN)/ruff check platform pods scheduler infra tools tests bench demo
	$(BIN)/mypy
	$(BIN)/mypy --strict tools

lint-imports: venv ## the layers (pyproject's [tool.importlinter]) on the package as installed
	$(BIN)/python -m tools.lint_imports

bench: deps venv ## benchmarks on a private Redis; prints a table, writes bench/results/
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.sql
	$(BIN)/python -m bench.cpu
	$(BIN)/python -m bench.pods
	$(BIN)/python -m bench.iteration
	$(BIN)/python -m bench.outbox
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.scheduler
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.scheduler_scale
	$(BIN)/python -m bench.fairness

bench-peers: deps venv ## podjobs beside Huey, Dramatiq, RQ, Celery, arq (venvs in var/peers/), interleaved; bench/results/peers.json
	$(BIN)/python -m bench.peers $(PEERS_ARGS)

bench-firstjob: deps venv ## the first-job column alone: interleaved starts (FIRSTJOB_ARGS="--rounds 12 --only huey,arq --instructions")
	$(BIN)/python -m bench.firstjob $(FIRSTJOB_ARGS)

bench-scale: deps venv ## the tenant directory at 10k/100k/1M tenants, 20 pods, 10 client processes (SCALE_ARGS="--sizes 10000,100000"); bench/results/scale.json
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

up: deps venv ## a local 3-pod cluster in var/ (stop it with make down)
	$(BIN)/podjobs dev up --pods 3 --dir var

down: venv
	$(BIN)/podjobs dev down --dir var

status: venv
	$(BIN)/podjobs dev status --dir var

clean: down
	rm -rf var
