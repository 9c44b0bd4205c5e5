# The two commands of the quick start:
#   make run    installs the agent in .venv and runs it on conf/agent.toml
#   make test   installs the agent, the test tools and the npm client, runs make lint, then every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-image lint install install-test node bench bench-hive bench-tail bench-mirrors bench-footprint check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e '.[speed]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e '.[speed,test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test node

# The forward-protocol tests drive the agent with @fluent-org/logger (npm), a client
# written by others; node and npm come from Debian's packages when missing.
node:
	@command -v node >/dev/null && command -v npm >/dev/null || \
		(apt-get update -q && apt-get install -y -q nodejs npm)
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error

run: install
	$(BIN)/hive-agent run -c conf/agent.toml

check: install
	$(BIN)/hive-agent check -c conf/agent.toml

test: install-test lint
	$(BIN)/python -m pytest -q

# ruff (lint and format) and mypy, as configured in pyproject.toml; make test runs it first.
# Opt-in, not part of `make test`: builds the image with a real Docker engine (Debian's docker.io,
# installed and started when missing; the base image is a debootstrap stand-in made once) and
# runs it. Skipped, with the reason, where no engine can start.
test-image: install-test
	sh tests/image/prepare.sh || [ $$? -eq 77 ]
	HIVE_AGENT_TEST_IMAGE=1 $(BIN)/python -m pytest -q -s -rs tests/image

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/forward_ingest.py

bench-hive: install
	$(BIN)/python bench/hive_pipeline.py

bench-tail: install
	$(BIN)/python bench/tail_ingest.py

bench-mirrors: install
	$(BIN)/python bench/mirror_fanout.py

bench-footprint: install
	$(BIN)/python bench/footprint.py

clean:
	rm -rf $(VENV) tests/node/node_modules var
