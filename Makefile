# `make demo` trains a LoRA adapter on the embedded service; `make test` runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; any other torch spec pulls gigabytes of CUDA wheels.
TORCH ?= torch==2.13.0
# The MLflow server the tracking tests start: mlflow without its own pins (pyarrow<26,
# scikit-learn, matplotlib), beside mlflow-skinny of the same version and what it serves with.
MLFLOW ?= 3.17.2
# LoRA on GPTQ checkpoints (tests/api/test_quantized_gptq.py quantises with it on CPU):
# gptqmodel 7.6.0 (7.7 needs torch 2.14, 7.0 fails to import under transformers 5.25) without
# its own pins (numpy==2.2.6, torchao, ninja, maturin: the CPU path we use imports none of them
# and runs on our numpy 2.4.6), beside optimum and what gptqmodel imports at the top. So
# `pip check` names gptqmodel's numpy pin and its missing torchao, ninja and maturin: expected.
GPTQ_PACKAGES ?= gptqmodel==7.6.0 optimum==2.3.0 device-smi==0.5.7 logbar==0.4.15 \
	tokenicer==0.0.14 pypcre==0.6.4 defuser==0.0.28 threadpoolctl==3.8.0

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
	$(PY) -m pip install -q --no-deps $(GPTQ_PACKAGES)
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
