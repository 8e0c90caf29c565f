# `make demo` trains a LoRA adapter on the embedded service; `make test` runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; any other torch spec pulls gigabytes of CUDA wheels.
TORCH ?= torch==2.13.0

.PHONY: install demo test test-servers lint

$(VENV)/.installed: pyproject.toml
	.ci/system-packages venv
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[worker,test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/demo.py

# PostgreSQL 15, redis-server, docker-compose and chromium, installed (apt-get) where missing.
test-servers:
	.ci/system-packages servers

test: install test-servers
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
