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

# Supply-chain scanners in a venv of their own (their pins would fight the project's): checkov for the
# k8s manifests and the Bento's Dockerfile, pip-audit for the installed packages.
TOOLS ?= .venv-tools
$(TOOLS)/.installed:
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q checkov==3.3.30 pip-audit==2.10.0
	touch $@

tools: $(TOOLS)/.installed

repro: install
	dvc repro

# The dashboard test drives the system Chromium through Playwright (which never downloads a browser
# here); install it from apt only when it is missing. Without it that one test is skipped, saying why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; } || \
	  echo "chromium could not be installed: the dashboard test will be skipped" >&2; }

test: install tools chromium
	pytest

# The tests not marked slow (no servers, no training runs): under 2 minutes instead of the suite's ~15.
test-fast: install
	pytest -m "not slow"

# Serve a model on this machine, authentication explicitly OFF (local use only; the first line says so).
# MODEL: a checkpoint directory (default: the shipped tiny base) or a packaged tag (safetyvlm:latest).
MODEL ?= models/shipped/qwen2_5_vl-tiny
PORT ?= 3000
serve:
	@echo "safetyvlm serve: authentication is OFF (SAFETYVLM_AUTH=off), every route is open: local use only, on 127.0.0.1:$(PORT)"
	SAFETYVLM_AUTH=off SAFETYVLM_MODEL=$(MODEL) $(PY) -m bentoml serve safetyvlm.serve.service:SafetyVLM --host 127.0.0.1 --port $(PORT)

# DVC figures (no-op repro time) and the S3 round trip of every output (README: DVC in practice)
dvc-noop: install
	python benchmarks/dvc_noop.py

dvc-roundtrip: install
	python benchmarks/dvc_roundtrip.py

.PHONY: install tools repro test test-fast chromium serve dvc-noop dvc-roundtrip
