#!/usr/bin/env bash
# Everything issue 19 item 6 asks of a GPU window, in one go, its figures in one Markdown file:
#
#   bash bench/gpu_all.sh                     # on a CUDA machine (ASIT_TORCH=cuda bash infra/local/bootstrap.sh first)
#   bash bench/gpu_all.sh --dry-run           # the same steps on the CPU, tiny shapes: checks the plumbing, no figure
#   OUT=figures.md PY=/path/python bash bench/gpu_all.sh
#
# Steps (each under its own timeout; a failed step is recorded and the next one runs):
#   1. machine: nvidia-smi, torch/CUDA versions, git commit, date, load
#   2. bench/bench_gpu.py: 8B-shaped Llama in bf16, layer 15 (batch 16 x 1024), then layers 7 15 31 (batch 8 x 2048):
#      tokens/s, MFU, each path vs the bare truncated forward, nnsight and TransformerLens when installed
#   3. pytest -m gpu: the DeepSpeed AutoTP host against the HF host over NCCL (tests/integration/test_tp_host.py)
#   4. pytest -m real on the GPU's CPU side, when the real models are imported (ASIT_MODEL_CACHE)
# About 4-6 minutes on an H200 (most of it the 8B model's random init and the TP test's start-up).
# Never copy a --dry-run figure into BENCHMARKS.md: it is a CPU smoke test.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PY:-.venv/bin/python}
STAMP=$(date -u +%Y%m%dT%H%MZ)
OUT=${OUT:-bench/gpu-figures-$STAMP.md}
START=$SECONDS
FAILED=0

step() {  # step TITLE TIMEOUT_S CMD...: run CMD, append its command, output, rc and wall time to $OUT
    local title=$1 limit=$2; shift 2
    local t0=$SECONDS rc
    printf '\n## %s\n\n`%s`\n\n```\n' "$title" "$*" >>"$OUT"
    timeout "$limit" "$@" >>"$OUT" 2>&1
    rc=$?
    printf '```\nrc %s, %s s\n' "$rc" "$((SECONDS - t0))" >>"$OUT"
    echo "gpu_all: $title: rc $rc in $((SECONDS - t0)) s"
    [[ $rc -eq 0 ]] || FAILED=$((FAILED + 1))
}

machine() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "devices", torch.cuda.device_count())'
    echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) files changed"
    echo "date $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
}

{
    echo "# GPU figures ($STAMP)"
    [[ $DRY -eq 1 ]] && echo "DRY RUN on the CPU, tiny shapes: these numbers are not GPU figures."
} >"$OUT"
export -f machine
export PY
step "machine" 60 bash -c machine

if [[ $DRY -eq 1 ]]; then
    SMALL=(--device cpu --shape tiny --batch 2 --seq 32 --batches 3)
    step "bench_gpu: layer 15 (dry run: tiny, CPU)" 300 "$PY" bench/bench_gpu.py "${SMALL[@]}" --layers 15
    step "bench_gpu: layers 7 15 31 (dry run: tiny, CPU)" 300 "$PY" bench/bench_gpu.py "${SMALL[@]}" --layers 7 15 31 --skip-peers
    step "pytest -m gpu (dry run: collected only)" 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider --collect-only tests
else
    step "bench_gpu: 8B shape, bf16, layer 15, batch 16 x 1024" 420 "$PY" bench/bench_gpu.py --layers 15
    step "bench_gpu: 8B shape, bf16, layers 7 15 31, batch 8 x 2048" 420 "$PY" bench/bench_gpu.py --layers 7 15 31 \
        --batch 8 --seq 2048 --skip-peers
    step "pytest -m gpu (DeepSpeed AutoTP vs HF host, NCCL)" 600 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
fi
if [[ -n "${ASIT_MODEL_CACHE:-}" ]]; then
    step "pytest -m real (real checkpoints)" 600 "$PY" -m pytest -m real -q -p no:cacheprovider tests/real
else
    printf '\n## pytest -m real\n\nskipped: ASIT_MODEL_CACHE is not set (import the models first)\n' >>"$OUT"
fi

printf '\nTotal %s s, %s step(s) failed.\n' "$((SECONDS - START))" "$FAILED" >>"$OUT"
echo "gpu_all: wrote $OUT ($((SECONDS - START)) s, $FAILED failed)"
exit $((FAILED > 0))
