# aim-engine. `make setup` brings every tool from nothing into .tools/ (ignored, cached, idempotent).
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS   := $(CURDIR)/.tools
VENV    := $(TOOLS)/venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
PYTHON3 ?= python3
PIP_VERSION := 25.3
# The venv is rebuilt when pyproject.toml changes (its hash names the stamp).
STAMP   := $(VENV)/.stamp-$(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-16)
EXAMPLE_CLUSTER := examples/cluster-mixed.json
# promtool (and prometheus) from Debian's package, pinned, unpacked into .tools/ (not installed system-wide).
PROM_DEB_VERSION := 2.42.0+ds-5+deb12u1
PROMTOOL := $(TOOLS)/bin/promtool
# Helm 3 and Helm 4 and helm-unittest, built from their Go modules at pinned versions.
HELM3_VERSION := v3.22.0
HELM4_VERSION := v4.3.1
HELM_UNITTEST_VERSION := v1.1.2
# kube-linter's module (golang.stackrox.io/kube-linter) is not served by the Go proxy here; kube-score
# is the linter used instead.
KUBE_SCORE_VERSION := v1.20.0
KUBE_SCORE := $(TOOLS)/bin/kube-score
# A real API server for the admission tests: kube-apiserver built from the k8s.io/kubernetes module
# (tools/k8s/go.mod pins it and its staging modules), etcd from Debian's etcd-server package.
ETCD_DEB_VERSION := 3.4.23-4+b4
ETCD := $(TOOLS)/bin/etcd
KUBE_APISERVER := $(TOOLS)/bin/kube-apiserver
KUBE_CONTROLLER_MANAGER := $(TOOLS)/bin/kube-controller-manager
KUBE_SCHEDULER := $(TOOLS)/bin/kube-scheduler
# kwok simulates GPU nodes (and marks their pods running); its stages come from its module source.
KWOK_VERSION := v0.8.0
KWOK := $(TOOLS)/bin/kwok
KWOK_STAGES := $(TOOLS)/kwok/stages.yaml
PROMOP_MODELS_VERSION := 6.0.0
CERTMANAGER_MODELS_VERSION := 6.0.0
HELM := $(TOOLS)/bin/helm
HELM4 := $(TOOLS)/bin/helm4
UNTT := $(TOOLS)/bin/untt
CRD_MODELS := $(TOOLS)/node/node_modules/@kubernetes-models/cert-manager/package.json
export GOFLAGS := -mod=mod

.PHONY: help setup setup-load test unit lint validate rules chart demo demo-offline bench bench-webhook clean

help:
	@echo "make demo      a real API server: GPU detection, recipe selection explained, a bad deployment refused"
	@echo "make demo-offline  the selection alone, on the bundled cluster snapshot"
	@echo "make test      lint, catalog validation and the test suite"
	@echo "make setup     install the virtualenv and pinned tools into .tools/ (run by the others)"
	@echo "make lint      ruff + mypy --strict on the core"
	@echo "make bench     selection benchmark (prints figures)"
	@echo "make bench-webhook  webhook benchmark with wrk over TLS (prints figures)"

setup: $(STAMP) $(PROMTOOL) $(HELM) $(HELM4) $(UNTT) $(CRD_MODELS) $(KUBE_SCORE) $(ETCD) $(KUBE_APISERVER) \
       $(KUBE_CONTROLLER_MANAGER) $(KUBE_SCHEDULER) $(KWOK) $(KWOK_STAGES)

$(KUBE_CONTROLLER_MANAGER) $(KUBE_SCHEDULER): $(TOOLS)/bin/%: tools/k8s/go.mod tools/k8s/go.sum
	@echo ">> building $* from k8s.io/kubernetes (tools/k8s/go.mod)"
	@mkdir -p $(TOOLS)/k8s $(TOOLS)/bin
	@cd tools/k8s && go build -o $(TOOLS)/k8s/$* k8s.io/kubernetes/cmd/$*
	@ln -sf ../k8s/$* $@

$(KWOK):
	@echo ">> building kwok $(KWOK_VERSION) from its Go module"
	@mkdir -p $(TOOLS)/gobinkwok $(TOOLS)/bin
	@GOBIN=$(TOOLS)/gobinkwok go install sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)
	@ln -sf ../gobinkwok/kwok $@

$(KWOK_STAGES):
	@mkdir -p $(TOOLS)/kwok
	@mkdir -p $(TOOLS)/src && dir=$$(cd $(TOOLS)/src && go mod download -json sigs.k8s.io/kwok@$(KWOK_VERSION) | \
	  $(PYTHON3) -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') && \
	  for f in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do \
	    echo "---"; cat "$$dir/kustomize/stage/$$f.yaml"; done > $@

$(ETCD):
	@echo ">> fetching etcd-server $(ETCD_DEB_VERSION) (Debian)"
	@mkdir -p $(TOOLS)/debs $(TOOLS)/bin
	@cd $(TOOLS)/debs && { apt-get download -qq etcd-server=$(ETCD_DEB_VERSION) 2>/dev/null || \
	  { apt-get update -qq && apt-get download -qq etcd-server=$(ETCD_DEB_VERSION); } || \
	  { echo ">> WARNING: etcd-server $(ETCD_DEB_VERSION) is gone from the archive; using its current version"; \
	    apt-get download -qq etcd-server; }; }
	@rm -rf $(TOOLS)/etcd && dpkg-deb -x $(TOOLS)/debs/etcd-server_*.deb $(TOOLS)/etcd
	@ln -sf ../etcd/usr/bin/etcd $@

$(KUBE_APISERVER): tools/k8s/go.mod tools/k8s/go.sum
	@echo ">> building kube-apiserver from k8s.io/kubernetes (tools/k8s/go.mod; a few minutes the first time)"
	@mkdir -p $(TOOLS)/k8s $(TOOLS)/bin
	@cd tools/k8s && go build -o $(TOOLS)/k8s/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
	@ln -sf ../k8s/kube-apiserver $@

$(KUBE_SCORE):
	@echo ">> building kube-score $(KUBE_SCORE_VERSION) from its Go module"
	@mkdir -p $(TOOLS)/gobinks $(TOOLS)/bin
	@GOBIN=$(TOOLS)/gobinks go install github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION)
	@ln -sf ../gobinks/kube-score $@

$(HELM):
	@echo ">> building helm $(HELM3_VERSION) from its Go module"
	@mkdir -p $(TOOLS)/gobin3 $(TOOLS)/bin
	@GOBIN=$(TOOLS)/gobin3 go install helm.sh/helm/v3/cmd/helm@$(HELM3_VERSION)
	@ln -sf ../gobin3/helm $@

$(HELM4):
	@echo ">> building helm $(HELM4_VERSION) from its Go module"
	@mkdir -p $(TOOLS)/gobin4 $(TOOLS)/bin
	@GOBIN=$(TOOLS)/gobin4 go install helm.sh/helm/v4/cmd/helm@$(HELM4_VERSION)
	@ln -sf ../gobin4/helm $@

# helm-unittest's go.mod has replace directives, so `go install mod@version` refuses it: build it as
# the main module from its downloaded source.
$(UNTT):
	@echo ">> building helm-unittest $(HELM_UNITTEST_VERSION) from its Go module"
	@mkdir -p $(TOOLS)/src $(TOOLS)/bin
	@dir=$$(cd $(TOOLS)/src && go mod download -json github.com/helm-unittest/helm-unittest@$(HELM_UNITTEST_VERSION) | \
	  $(PYTHON3) -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') && \
	  rm -rf $(TOOLS)/src/helm-unittest && cp -r "$$dir" $(TOOLS)/src/helm-unittest && chmod -R u+w $(TOOLS)/src/helm-unittest
	@cd $(TOOLS)/src/helm-unittest && go build -o $@ ./cmd/helm-unittest

$(CRD_MODELS):
	@echo ">> installing the prometheus-operator and cert-manager CRD schemas (@kubernetes-models)"
	@mkdir -p $(TOOLS)/node
	@cd $(TOOLS)/node && { test -f package.json || echo '{"private": true}' > package.json; } && \
	  npm install --silent --no-audit --no-fund @kubernetes-models/prometheus-operator@$(PROMOP_MODELS_VERSION) \
	    @kubernetes-models/cert-manager@$(CERTMANAGER_MODELS_VERSION)

$(PROMTOOL):
	@echo ">> fetching prometheus $(PROM_DEB_VERSION) (Debian) for promtool"
	@mkdir -p $(TOOLS)/debs $(TOOLS)/bin
	@cd $(TOOLS)/debs && { apt-get download -qq prometheus=$(PROM_DEB_VERSION) 2>/dev/null || \
	  { apt-get update -qq && apt-get download -qq prometheus=$(PROM_DEB_VERSION); } || \
	  { echo ">> WARNING: prometheus $(PROM_DEB_VERSION) is gone from the archive; using its current version"; \
	    apt-get download -qq prometheus; }; }
	@rm -rf $(TOOLS)/prometheus && dpkg-deb -x $(TOOLS)/debs/prometheus_*.deb $(TOOLS)/prometheus
	@ln -sf ../prometheus/usr/bin/prometheus $(TOOLS)/bin/prometheus
	@ln -sf ../prometheus/usr/bin/promtool $(TOOLS)/bin/promtool
	@$(PROMTOOL) --version | head -1

$(STAMP): pyproject.toml
	@echo ">> setting up $(VENV)"
	@mkdir -p $(TOOLS)
	@test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip==$(PIP_VERSION)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.stamp-*
	@touch $@
	@echo ">> setup done"

lint: setup
	$(BIN)/ruff check recipe-selector webhook tests tools
	$(BIN)/mypy

validate: setup
	$(BIN)/aim-recipes validate

unit: setup
	$(BIN)/pytest -q

rules: setup
	$(PY) tools/gen_dashboards.py --check
	$(PROMTOOL) check rules alerts/aim-engine.rules.yaml
	$(PROMTOOL) test rules alerts/tests/aim-engine.rules.test.yaml

chart: setup
	$(HELM) lint --strict chart/
	$(HELM4) lint --strict chart/
	$(UNTT) chart/
	$(PY) tools/render_chart.py

test: lint validate rules chart unit

# The product on a real API server (etcd + kube-apiserver on loopback): detection, selection with
# its explanation, the webhook refusing a bad Deployment and injecting a recipe. Tears down on exit.
demo: setup
	@$(PY) tools/demo.py

# The same selection offline, on the snapshot examples/cluster-mixed.json (no API server).
demo-offline: setup
	@echo "== GPU inventory of $(EXAMPLE_CLUSTER) =="
	@$(BIN)/aim-recipes detect --cluster $(EXAMPLE_CLUSTER)
	@echo
	@echo "== aim-recipes select --model Qwen/Qwen3-32B --explain =="
	@$(BIN)/aim-recipes select --model Qwen/Qwen3-32B --cluster $(EXAMPLE_CLUSTER) --explain
	@echo
	@echo "== an override the cluster cannot honour is refused: --precision fp8 --gpu-type A100 =="
	@$(BIN)/aim-recipes select --model Qwen/Qwen3-32B --cluster $(EXAMPLE_CLUSTER) --precision fp8 --gpu-type A100; \
	  echo "(exit code $$?: 1 means no recipe fits)"

bench: setup
	$(PY) tools/bench_selection.py

# wrk (Debian) for the webhook benchmark; installed only when missing.
setup-load:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }

bench-webhook: setup setup-load
	$(PY) tools/bench_webhook.py

clean:
	rm -rf $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
