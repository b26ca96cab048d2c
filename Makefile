# Two entry points for a newcomer: `make repro` (install + run the pipeline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

repro: install
	dvc repro

test: install
	pytest

# DVC figures (no-op repro time) and the S3 round trip of every output (README: DVC in practice)
dvc-noop: install
	python benchmarks/dvc_noop.py

dvc-roundtrip: install
	python benchmarks/dvc_roundtrip.py

.PHONY: install repro test dvc-noop dvc-roundtrip
