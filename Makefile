# ngdbench — every entry point. `make demo` and `make test` install first when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints.txt
SCALE ?= cpu
LAUNCHER ?= basic
DATA ?=
STAMP := $(VENV)/.installed


.PHONY: install demo test test-slow lint format train-ddp bench reproduce-fig1 reproduce-fig6 reproduce-fig7 \
        reproduce-tables reproduce-rkfac figures fashion-mnist clean

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev,sweep]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

# Copies Debian's Fashion-MNIST (package dataset-fashion-mnist) into data.root,
# or lets torchvision download it where internet exists.
fashion-mnist: $(STAMP)
	$(PY) -m data.fetch fashion_mnist --root $(or $(ROOT),data_root)

# Data-parallel training: make train-ddp NPROC=2 ARGS="optimizer=singd_diagonal data=cifar10"
NPROC ?= 2
ARGS ?=
train-ddp: $(STAMP)
	$(PY) -m experiments.distributed --nproc $(NPROC) trainer.distributed=true $(ARGS) && \
	$(VENV)/bin/torchrun --nproc_per_node=$(NPROC) -m experiments.train trainer.distributed=true $(ARGS)

clean:
	rm -rf outputs multirun results/demo

-include reproduce.mk
-include sweep.mk
-include bench.mk
