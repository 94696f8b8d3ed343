# The two README commands: `make demo` and `make test` (each installs into .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-only install lint
$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[all,dev]'

demo: install
	$(VENV)/bin/edgeproof demo

test: install test-only

test-only:
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check .
