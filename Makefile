# metamapper-operator — every target installs what it needs itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_PACKAGES := redis-server rabbitmq-server postgresql mariadb-server ca-certificates \
  containerd runc containernetworking-plugins iptables conntrack iproute2 kmod \
  buildah mmdebstrap catatonit
CLUSTER_DIR ?= $(HOME)/.cache/metamapper-operator/cluster
PYTEST_ARGS ?=
# How many processes run the suite (test, test-only, test-fast). 2: pytest-xdist's `-n 2`, with
# tests/scheduling.py keeping each group of tests/conftest.py's GROUPS (the node's tests, the
# RBAC matrix) whole in one of the two. 1: plain pytest.
TEST_WORKERS ?= 2
WORKERS_ARGS := $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS))
# checkov (tests/test_checkov.py) lives in a virtualenv of its own: its dependencies
# conflict with the operator's.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
# devenv/ (the development environment) is imported from the checkout, never installed.
export PYTHONPATH := $(CURDIR)

.PHONY: help demo deps venv checkov tools images lint docs test test-only cluster-up cluster-down services-up services-down bench manifests prometheus

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# e.g. DEMO_ARGS="--dashboard docs/pictures/dashboard.png" (python -m devenv.demo --help)
DEMO_ARGS ?=

demo: deps venv tools images ## the whole loop live on real pods: cluster, operator via helm, real workers scaling on a burst
	$(PY) -m devenv.demo $(DEMO_ARGS)

deps: ## system packages from Debian: the services, the node's runtime, the image builders
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then echo "system packages present"; else \
	  echo "installing $(APT_PACKAGES) ..."; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); fi
	@command -v go >/dev/null || { echo "Go (>= 1.25) is needed to build the control plane: install it first" >&2; exit 1; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[operator,worker,dev]'
	touch $@

venv: $(VENV)/.installed ## Python virtualenv with the operator, worker and dev dependencies

$(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/pip install -q checkov==$(CHECKOV_VERSION)
	touch $@

checkov: $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION) ## checkov (pinned) in its own virtualenv, for tests/test_checkov.py

tools: ## the Kubernetes binaries (control plane, kubelet, kube-proxy), kubectl, helm and CoreDNS from Go modules (cached)
	@tools/build.sh >/dev/null

prometheus: ## Prometheus and promtool unpacked from Debian's package (cached): the alerting rules' checks, the demo's dashboard
	@tools/prometheus.sh

images: deps venv ## build the worker and operator images from the Dockerfile and load them into the node (cached)
	$(PY) -m devenv.images build

lint: venv ## ruff, mypy, the import contracts (import-linter) and a strict build of the docs site
	$(VENV)/bin/ruff check operator tasks common devenv tests bench hack docker
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench hack docker
	$(VENV)/bin/lint-imports --no-cache --no-logo
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site

docs: venv ## serve the documentation site (docs/, mkdocs.yml) on http://127.0.0.1:8000, rebuilt on every edit
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict

test: deps venv checkov tools images lint test-only ## everything: set-up, images, lint and the whole suite

# Tests that need no service, no control plane and no node: the operator's unit and wiring
# tests, and the worker app's pure ones.
FAST_TESTS := tests/unit tests/devenv/test_waiting.py tests/devenv/test_monitors.py \
  tests/devenv/test_prometheus_unpack.py tests/devenv/test_dashboard.py \
  tests/tasks/test_config.py tests/tasks/test_diff.py \
  tests/tasks/test_redact.py tests/devenv/test_dns_manifests.py \
  tests/bench/test_traces.py tests/bench/test_trace_replay.py tests/bench/test_policy_simulation.py \
  tests/bench/test_policy_search.py \
  tests/test_groups.py tests/test_scheduling.py \
  tests/bench/test_chaos_faults.py tests/bench/test_chaos_ledger.py tests/bench/test_chaos_report.py \
  tests/bench/test_chaos_upgrade_checks.py tests/devenv/test_releases.py

.PHONY: test-fast
test-fast: venv ## unit and wiring tests only: no service, control plane or node (< 30 s)
	METAMAPPER_GENERATIVE_PROFILE=fast $(VENV)/bin/pytest -q --timeout=60 $(WORKERS_ARGS) $(PYTEST_ARGS) $(FAST_TESTS)

test-only: ## the pytest suite alone (after `make test` has set things up once)
	$(VENV)/bin/pytest $(WORKERS_ARGS) $(PYTEST_ARGS)

services-up: deps venv ## start Redis, RabbitMQ, PostgreSQL and MariaDB on loopback
	$(PY) -m devenv.services up

services-down: venv ## stop them
	$(PY) -m devenv.services down

cluster-up: deps venv tools ## start a local cluster with a real node; print the KUBECONFIG to export
	$(PY) -m devenv.controlplane up --dir $(CLUSTER_DIR)

cluster-down: venv ## stop it, leaving no process, mount, netns, veth or bridge behind
	$(PY) -m devenv.controlplane down --dir $(CLUSTER_DIR)

manifests: tools ## render deploy/install.yaml (and the chart's copy of crds/) from the Helm chart
	hack/render-manifests.sh

bench: deps venv tools ## benchmarks: scripts that print figures
	@for script in bench/[!_]*.py; do echo "== $$script"; $(PY) $$script || exit 1; done
