# Switchyard developer tasks. Needs only python3 (>= 3.11) and a C compiler (optional outside the
# tests: see README, Development), plus node 20 and npm for the tests:
# uv is bootstrapped into .venv at a pinned version, and both the Python environment and
# tests/node/node_modules are installed from the committed lock files, never re-resolved.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
NODE_DIR := tests/node
UV := $(VENV)/bin/uv

# uv: use this repo's .venv, never download an interpreter.
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
export UV_PYTHON_DOWNLOADS := never

# One pytest worker more than there are CPUs: the end-to-end tests spend much of their time
# waiting on the processes and sockets they start, and with one worker per CPU the load average
# stayed at 1.5-1.9 on two CPUs (the suite: 14 min 26 s with 2 workers, 10 min 24 s with 3,
# same machine, same hour).
# The CPUs this process may run on where the system says (Linux), else all of them.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; f = getattr(os, "sched_getaffinity", None); print((len(f(0)) if f else os.cpu_count() or 1) + 1)')

UV_STAMP := $(VENV)/.stamp-uv-$(UV_VERSION)
SYNC_STAMP := $(VENV)/.stamp-sync
NODE_STAMP := $(NODE_DIR)/node_modules/.stamp-npm-ci

.PHONY: help install chromium run test lint bench clean

help:
	@echo "make install  - .venv (package + dev group, frozen from uv.lock) and $(NODE_DIR) (npm ci)"
	@echo "make run      - serve the bundled demo config on http://127.0.0.1:8080 (no Node needed)"
	@echo "make test     - pytest on CPUs + 1 workers (TEST_WORKERS=N to change; PYTEST_ARGS=... to add arguments)"
	@echo "make lint     - ruff check, ruff format --check, mypy, lint-imports (the layering)"
	@echo "make bench    - bench/run.py"
	@echo "make clean    - remove .venv, node_modules and caches"

install: $(SYNC_STAMP) $(NODE_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, got " + sys.version)'
	$(PYTHON) -m venv $(VENV)

# A venv made by uv has no pip: add it with ensurepip before installing uv with it.
$(UV_STAMP): | $(VENV)/bin/python
	$(VENV)/bin/python -m pip --version >/dev/null 2>&1 || $(VENV)/bin/python -m ensurepip --default-pip
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-input uv==$(UV_VERSION)
	rm -f $(VENV)/.stamp-uv-*
	touch $@

# --inexact: uv (and pip) are not in the lock; an exact sync would uninstall them.
$(SYNC_STAMP): $(UV_STAMP) pyproject.toml uv.lock hatch_build.py src/switchyard/wire/_members.c
	$(UV) sync --frozen --group dev --inexact
	touch $@

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $@

# The Python side alone: running the gateway needs no Node (only the tests' clients do).
run: $(SYNC_STAMP)
	$(VENV)/bin/switchyard serve --host 127.0.0.1 --port 8080

# The console's browser tests drive Debian's chromium: installed from apt when missing (as
# root, as on CI); anywhere else, install it first (`sudo apt-get install chromium`).
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium (the console's browser tests need it)"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	} || { echo "chromium is missing and could not be installed: apt-get install chromium" >&2; exit 1; }

# No `|| true` and no special-casing: pytest's exit 5 (no tests collected) fails the target.
test: install chromium
	$(VENV)/bin/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench hatch_build.py
	$(VENV)/bin/ruff format --check src tests bench hatch_build.py
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install
	$(VENV)/bin/python bench/run.py

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +
