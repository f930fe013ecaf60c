# One command set for setup, lint, types, tests and the demo; .ci/run uses the same targets.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo lint test bench soak stop-embedded clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/amends demo

lint: setup
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
	rm -rf $(VENV) .amends .pytest_cache .mypy_cache .ruff_cache

