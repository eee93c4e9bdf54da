# PromptPulse developer commands. `make up` runs the local stack, `make test` the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install up watch down status stack-up test unit lint proto bench clean-local

# The virtualenv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The demo (docs/demo.md): the stack with its traffic and quality drift, then the demo's alerts
# in the foreground. Ctrl-C stops following them; the stack keeps running until `make down`.
WATCH_ALERTS := $(VENV)/bin/promptpulse alerts subscribe --deployment demo

up: install
	bash deploy/local/stack.sh up
	@bash deploy/local/stack.sh banner
	$(WATCH_ALERTS)

# Follow the demo's alerts again (the stack keeps running after Ctrl-C).
watch:
	@bash deploy/local/stack.sh banner
	$(WATCH_ALERTS)

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

# ruff, then the import contracts (pyproject.toml [tool.importlinter]): who may import whom.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(VENV)/bin/mypy  # shared/ and services/, as [tool.mypy] in pyproject.toml says

proto: install
	$(PY) -m shared.events.generate

bench: stack-up
	$(PY) bench/kafka_roundtrip.py
