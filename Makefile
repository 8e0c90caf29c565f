# `make demo` trains a LoRA adapter on the embedded service; `make test` runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; any other torch spec pulls gigabytes of CUDA wheels.
TORCH ?= torch==2.13.0
# The MLflow server the tracking tests start: mlflow without its own pins (pyarrow<26,
# scikit-learn, matplotlib), beside mlflow-skinny of the same version and what it serves with.
MLFLOW ?= 3.17.2

.PHONY: install demo test test-servers lint

$(VENV)/.installed: pyproject.toml
	.ci/system-packages venv
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[worker,tracking,test]"
	$(PY) -m pip install -q "mlflow-skinny==$(MLFLOW)" "mlflow-tracing==$(MLFLOW)" flask \
		flask-cors graphene huey aiohttp
	$(PY) -m pip install -q --no-deps "mlflow==$(MLFLOW)"
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
