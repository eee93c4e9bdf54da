# PromptPulse developer commands. `make up` runs the local stack, `make test` the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install up down status stack-up test unit lint proto bench clean-local

# The virtualenv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

up: install
	bash deploy/local/stack.sh up

down:
	bash deploy/local/stack.sh down

status:
	bash deploy/local/stack.sh status

# Kafka + PostgreSQL + schema + topics: what the integration tests talk to.
stack-up: install
	bash deploy/local/stack.sh infra

test: stack-up
	$(VENV)/bin/pytest $(PYTEST_ARGS)

unit: install
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

proto: install
	$(PY) -m shared.events.generate

bench: stack-up
	$(PY) bench/kafka_roundtrip.py
