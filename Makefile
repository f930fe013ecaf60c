# One command set for setup, lint, types, tests and the demo; .ci/run uses the same targets.
# Every package comes from uv.lock (hashes included): a fresh machine gets the very versions
# the tests passed with, whatever was released since. `make lock` moves them on purpose.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST_ARGS ?=
UV_VERSION := 0.13.9
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: setup lock lock-check demo lint test bench soak stop-embedded clean

setup: $(VENV)/.installed

$(UV):  # uv itself, pinned, in a venv of its own so that syncing .venv never removes it
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'

# --locked installs exactly uv.lock and fails when pyproject.toml and uv.lock disagree.
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra dev --python $(PYTHON) --quiet
	touch $@

lock: $(UV)  # re-resolve every dependency to the newest release pyproject.toml allows
	$(UV) lock --upgrade --python $(PYTHON)

lock-check: $(UV)  # fails when uv.lock is not what pyproject.toml resolves to
	$(UV) lock --check --python $(PYTHON)

demo: setup
	$(BIN)/amends demo

lint: setup lock-check
	$(BIN)/ruff check scheduler workers tests bench
	$(BIN)/ruff format --check scheduler workers tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup  # fan-out against raw SMTP and Dramatiq, latency, bytes per communication, timers
	$(BIN)/python bench/bench_delivery.py

soak: setup  # steady load under SIGKILLs, Redis restarts and SMTP outages; MINUTES=10 by default
	$(BIN)/python bench/soak.py --minutes $(or $(MINUTES),10)

AMENDS_HOME ?= .amends

stop-embedded:  # the embedded Redis servers amends started under $AMENDS_HOME (default .amends) run until stopped
	-[ -x $(BIN)/python ] && $(BIN)/python -c "import sys; from pathlib import Path; from scheduler.dev.embedded import stop_embedded_redis as stop; [stop(p.parent) for p in Path(sys.argv[1]).glob('**/redis.pid')]" '$(AMENDS_HOME)'

clean: stop-embedded
	rm -rf $(VENV) $(UV_HOME) .amends .pytest_cache .mypy_cache .ruff_cache

