#!/bin/bash
# The tiny test model on vLLM's CPU build, measured on loopback: vllm serve with the settings of
# recipe tiny-llama-cpu-x86-bf16, then vLLM's own benchmark client (vllm bench serve) at the
# recipe's stated conditions (128 input / 128 output tokens, 16 concurrent, 160 requests).
# Prints the client's report; the figures go into the recipe's performance (provenance: measured).
#
#   tools/engine/bench_cpu.sh [WORKDIR]      (default .tools/bench-cpu; needs make setup's vLLM venv)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mkdir -p "${1:-$ROOT/.tools/bench-cpu}" && cd "${1:-$ROOT/.tools/bench-cpu}" && pwd)
PY=$ROOT/.tools/vllm-venv/bin/python
VLLM=$ROOT/.tools/vllm-venv/bin/vllm
PORT=${AIM_BENCH_PORT:-18000}
[ -x "$VLLM" ] || { echo "bench_cpu: $VLLM missing: run make setup" >&2; exit 2; }
export HF_HOME=$WORK/hf HF_HUB_OFFLINE=1 TMPDIR=$WORK/tmp VLLM_CACHE_ROOT=$WORK/vllm-cache \
  TORCHINDUCTOR_CACHE_DIR=$WORK/inductor VLLM_CPU_KVCACHE_SPACE=1
mkdir -p "$TMPDIR"
"$PY" "$ROOT/tools/engine/make_test_model.py" --hf-home "$HF_HOME" > "$WORK/make-model.log"
start=$(date +%s.%N)
"$VLLM" serve aim-engine/tiny-llama --host 127.0.0.1 --port "$PORT" --max-model-len 2048 --max-num-seqs 16 \
  --enforce-eager > "$WORK/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  kill -0 $server 2>/dev/null || { echo "bench_cpu: vllm serve exited (see $WORK/serve.log)" >&2; exit 1; }
  sleep 0.5
done
echo "ready after $(echo "$(date +%s.%N) - $start" | bc) s"
"$VLLM" bench serve --backend vllm --base-url "http://127.0.0.1:$PORT" --model aim-engine/tiny-llama \
  --dataset-name random --random-input-len 128 --random-output-len 128 --num-prompts 160 --max-concurrency 16 \
  --ignore-eos --save-result --result-dir "$WORK" --result-filename bench.json 2>&1 | sed -n '/Serving Benchmark Result/,/^=*$/p'
