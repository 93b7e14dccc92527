#!/bin/bash
# The tiny test model on vLLM's CPU build, measured on loopback: vllm serve with the settings of
# recipe tiny-llama-cpu-x86-bf16, then vLLM's own benchmark client (vllm bench serve) at the
# recipe's stated conditions (128 input / 128 output tokens, 16 concurrent, 160 requests).
# Prints the client's report; the figures go into the recipe's performance (provenance: measured).
#
#   tools/engine/bench_cpu.sh [WORKDIR] [-- VLLM_SERVE_ARGS...]
#       WORKDIR default .tools/bench-cpu; needs make setup's vLLM venv. Arguments after `--` are
#       added to vllm serve (a setting to compare with the recipe's, e.g. -- --stream-interval 4).
#   Environment: AIM_BENCH_REPEATS (runs against the same server, default 1; with more, one line of
#   figures per run), AIM_BENCH_PROMPTS (requests per run, default 160), AIM_BENCH_PORT (18000);
#   any VLLM_CPU_* variable set here reaches the server (e.g. VLLM_CPU_NUM_OF_RESERVED_CPU=0).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$ROOT/.tools/bench-cpu
if [ $# -gt 0 ] && [ "$1" != "--" ]; then DIR=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; fi
WORK=$(mkdir -p "$DIR" && cd "$DIR" && pwd)
PY=$ROOT/.tools/vllm-venv/bin/python
VLLM=$ROOT/.tools/vllm-venv/bin/vllm
PORT=${AIM_BENCH_PORT:-18000}
REPEATS=${AIM_BENCH_REPEATS:-1}
PROMPTS=${AIM_BENCH_PROMPTS:-160}
[ -x "$VLLM" ] || { echo "bench_cpu: $VLLM missing: run make setup" >&2; exit 2; }
export HF_HOME=$WORK/hf HF_HUB_OFFLINE=1 TMPDIR=$WORK/tmp VLLM_CACHE_ROOT=$WORK/vllm-cache \
  TORCHINDUCTOR_CACHE_DIR=$WORK/inductor VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
mkdir -p "$TMPDIR"
"$PY" "$ROOT/tools/engine/make_test_model.py" --hf-home "$HF_HOME" > "$WORK/make-model.log"
start=$(date +%s.%N)
"$VLLM" serve aim-engine/tiny-llama --host 127.0.0.1 --port "$PORT" --max-model-len 2048 --max-num-seqs 16 \
  --enforce-eager "$@" > "$WORK/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  kill -0 $server 2>/dev/null || { echo "bench_cpu: vllm serve exited (see $WORK/serve.log)" >&2; exit 1; }
  sleep 0.5
done
echo "ready after $(echo "$(date +%s.%N) - $start" | bc) s${*:+ (with $*)}"
for run in $(seq 1 "$REPEATS"); do
  report=$("$VLLM" bench serve --backend vllm --base-url "http://127.0.0.1:$PORT" --model aim-engine/tiny-llama \
    --dataset-name random --random-input-len 128 --random-output-len 128 --num-prompts "$PROMPTS" --max-concurrency 16 \
    --ignore-eos --percentile-metrics ttft,tpot,itl --metric-percentiles 50,95,99 \
    --save-result --result-dir "$WORK" --result-filename "bench-$run.json" 2>&1 | sed -n '/Serving Benchmark Result/,/^=*$/p')
  if [ "$REPEATS" = 1 ]; then
    echo "$report"
  else
    echo "run $run: $(echo "$report" | grep -E 'Failed requests|Output token throughput|P95 TTFT|Mean TPOT|P95 ITL' \
      | sed 's/  */ /g; s/ (tok\/s)//; s/ (ms)//' | paste -sd';')"
  fi
done
