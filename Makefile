# `make demo` trains a LoRA adapter on the embedded service; `make test` runs the suite;
# `make lint` runs ruff and mypy; `make lock` updates requirements.lock after pyproject changes.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Every version the service and its tests install, compiled from pyproject.toml (`make lock`).
# The installs below read it as constraints: it pins what is installed, and CUDA's wheels,
# which it lists for the GPU image, are not pulled in where the CPU torch needs none.
LOCK := requirements.lock
LOCK_INPUTS := pyproject.toml requirements-mlflow-server.in
LOCK_EXTRAS := --extra worker --extra gpu --extra tracking --extra test --extra dev
# The CPU wheel; any other torch spec pulls gigabytes of CUDA wheels. (The lock pins the same.)
TORCH ?= torch==2.13.0
# The MLflow server the tracking tests start: mlflow without its own pins (pyarrow<26,
# scikit-learn, matplotlib), beside mlflow-skinny of the same version and what it serves with
# (requirements-mlflow-server.in). The version is the lock's mlflow-skinny.
MLFLOW ?= $(shell sed -n 's/^mlflow-skinny==//p' $(LOCK))
# LoRA on GPTQ checkpoints (tests/e2e/test_quantized_gptq.py quantises with it on CPU):
# gptqmodel 7.6.0 (7.7 needs torch 2.14, 7.0 fails to import under transformers 5.25) without
# its own pins (numpy==2.2.6, torchao, ninja, maturin: the CPU path we use imports none of them
# and runs on our numpy 2.4.6), beside optimum and what gptqmodel imports at the top. So
# `pip check` names gptqmodel's numpy pin and its missing torchao, ninja and maturin: expected.
GPTQ_PACKAGES ?= gptqmodel==7.6.0 optimum==2.3.0 device-smi==0.5.7 logbar==0.4.15 \
	tokenicer==0.0.14 pypcre==0.6.4 defuser==0.0.28 threadpoolctl==3.8.0

.PHONY: install demo test test-servers lint lock lock-check

$(VENV)/.installed: $(LOCK_INPUTS) $(LOCK)
	.ci/system-packages venv
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -c $(LOCK) -e ".[worker,tracking,test,dev]"
	$(PY) -m pip install -q -c $(LOCK) "mlflow-skinny==$(MLFLOW)" "mlflow-tracing==$(MLFLOW)" \
		-r requirements-mlflow-server.in
	$(PY) -m pip install -q --no-deps "mlflow==$(MLFLOW)"
	$(PY) -m pip install -q --no-deps $(GPTQ_PACKAGES)
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/demo.py

# PostgreSQL 15, redis-server, docker-compose and chromium, installed (apt-get) where missing.
test-servers:
	.ci/system-packages servers

# Lint first (about a minute): a style or type error fails before the slow suite.
test: install test-servers lint
	$(PY) -m pytest -q

# ruff, then mypy with pyproject's [tool.mypy] (strict on tunesmith/ and api/).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# uv alone, so that `make lock` works before the rest installs (a pyproject change that the
# old lock cannot satisfy would stop `make install`).
$(VENV)/bin/uv:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) uv

# Re-resolve requirements.lock from pyproject.toml (and the MLflow server's list), keeping every pin that still fits
# (`make lock UPGRADE=--upgrade` moves everything to the newest allowed versions).
lock: $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile $(LOCK_INPUTS) $(LOCK_EXTRAS) --universal $(UPGRADE) -o $(LOCK)

# Fails when requirements.lock is not what `make lock` would write (pyproject changed
# without it). Resolves against the package index; tests/unit/test_lockfile.py is the
# offline check that every pyproject requirement is pinned in the lock.
lock-check: $(VENV)/bin/uv
	cp $(LOCK) $(VENV)/lock-check.txt
	$(VENV)/bin/uv pip compile -q $(LOCK_INPUTS) $(LOCK_EXTRAS) --universal \
		-o $(VENV)/lock-check.txt
	diff <(grep -v '^#' $(LOCK)) <(grep -v '^#' $(VENV)/lock-check.txt) \
		|| { echo "requirements.lock is out of date with pyproject.toml: run make lock"; exit 1; }
