#!/usr/bin/env bash
# fetch-crds.sh OUT PROMOP_VERSION LWS_VERSION KWOK_VERSION: the CRDs and kwok stages the cluster and
# the chart tests use, from their Go modules: OUT/crds/ (prometheus-operator's PrometheusRule and
# ServiceMonitor, the LeaderWorkerSet) and OUT/kwok/stages.yaml (kwok's fast node and pod stages).
set -euo pipefail
out=$1 promop=$2 lws=$3 kwok=$4
mod_dir() { (cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'); }
mkdir -p "$out/crds" "$out/kwok"
d=$(mod_dir "github.com/prometheus-operator/prometheus-operator@$promop")
cp "$d"/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml "$out/crds/"
cp "$d"/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml "$out/crds/"
d=$(mod_dir "sigs.k8s.io/lws@$lws")
cp "$d"/config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml "$out/crds/"
d=$(mod_dir "sigs.k8s.io/kwok@$kwok")
for f in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  echo "---"; cat "$d/kustomize/stage/$f.yaml"
done > "$out/kwok/stages.yaml"
chmod -R u+w "$out"
