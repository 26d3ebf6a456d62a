#!/usr/bin/env bash
# Everything issue 19 item 6 asks of a GPU window, in one go, its figures in one Markdown file:
#
#   bash bench/gpu_all.sh                     # on a CUDA machine (ASIT_TORCH=cuda bash infra/local/bootstrap.sh first)
#   bash bench/gpu_all.sh --dry-run           # the same steps on the CPU, tiny shapes: checks the plumbing, no figure
#   OUT=figures.md PY=/path/python bash bench/gpu_all.sh
#
# On a machine with no package index (the GPU machine lent to this project has torch and transformers but no
# Ray, MLflow or DeepSpeed): build .whl/site.tar.xz here with `.venv/bin/python bench/offline_bundle.py`, carry
# it, and run this script there with PY=python3. It unpacks the archive once to $ASIT_SITE (/tmp/asit-site)
# and puts it and the checkout on PYTHONPATH, so the machine's own packages serve the rest.
# With this workplace's device tool, one call: command `PY=python3 OUT=$OUT/gpu-figures.md bash bench/gpu_all.sh`,
# carry [".whl"], timeout_s 600 (the figures come back as gpu-figures.md).
#
# The organisms' chain on the GPU needs a finished demo's models carried along: `bash bench/gpu_all.sh --prepare`
# here runs the demo when runs/demo has none, copies its two organisms (a few MB) to .whl/organisms and builds
# .whl/site.tar.xz (kept when its list of wheels is unchanged). Real checkpoints do not travel (SmolLM2's GGUF
# alone is 92 MB).
#
# Steps, most wanted first, each under its own timeout and all under DEADLINE_S (default 540 s, so that one
# 10-minute device call returns its figures); a failed step is recorded and the next one runs, a step with
# under 30 s left is recorded as skipped:
#   1. machine: nvidia-smi, torch/CUDA versions, git commit, date, load
#   2. bench/bench_gpu.py: 8B-shaped Llama in bf16, layer 15, batch 16 x 1024: tokens/s, MFU, each path vs the
#      bare truncated forward, nnsight and TransformerLens when importable
#   3. pytest -m gpu: the DeepSpeed AutoTP host against the HF host over NCCL, extract on CUDA against the CPU path
#   4. the demo's chain on CUDA from .whl/organisms (`asit run configs/demo.yaml` with models.*.device=cuda)
#   5. bench/bench_gpu.py again, layers 7 15 31, batch 8 x 2048
#   6. pytest -m real, when the real models are imported (ASIT_MODEL_CACHE)
# About 5-8 minutes on an H200 (most of it the 8B model's random init and Ray's start-ups).
# Never copy a --dry-run figure into BENCHMARKS.md: it is a CPU smoke test.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PY:-.venv/bin/python}
if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    if [[ ! -f runs/demo/models/target/config.json ]]; then
        "$PY" -m cli.main run configs/demo.yaml
    fi
    rm -rf .whl/organisms && mkdir -p .whl/organisms
    cp -rL runs/demo/models/source runs/demo/models/target .whl/organisms/
    "$PY" bench/offline_bundle.py  # rebuilt only when its list of wheels changed
    du -sh .whl/organisms .whl/site.tar.xz
    exit 0
fi
if [[ -f .whl/site.tar.xz ]]; then
    SITE=${ASIT_SITE:-/tmp/asit-site}
    stamp=$(cksum <.whl/site.tar.xz)
    # A later call on the same machine finds it unpacked; a different archive replaces it (never a stale mix).
    if [[ "$(cat "$SITE/.unpacked" 2>/dev/null)" != "$stamp" ]]; then
        rm -rf "$SITE" && mkdir -p "$SITE" && tar -xJf .whl/site.tar.xz -C "$SITE" && echo "$stamp" >"$SITE/.unpacked" \
            || { echo "gpu_all: could not unpack .whl/site.tar.xz into $SITE" >&2; exit 2; }
    fi
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
STAMP=$(date -u +%Y%m%dT%H%MZ)
OUT=${OUT:-bench/gpu-figures-$STAMP.md}
START=$SECONDS
DEADLINE_S=${DEADLINE_S:-540}
FAILED=0

step() {  # step TITLE TIMEOUT_S CMD...: run CMD, append its command, output, rc and wall time to $OUT
    local title=$1 limit=$2; shift 2
    local t0=$SECONDS rc left=$((DEADLINE_S - (SECONDS - START)))
    if ((left < 30)); then
        printf '\n## %s\n\nskipped: %s s left of DEADLINE_S=%s\n' "$title" "$left" "$DEADLINE_S" >>"$OUT"
        echo "gpu_all: $title: skipped ($left s left)"
        return
    fi
    ((limit > left)) && limit=$left
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
    if [[ -f .whl/site.txt ]]; then
        echo "offline bundle ($(grep -vc "^#" .whl/site.txt) wheels) unpacked in $SITE"
        # A bundled package that needs a newer version of one of the machine's shows here, before any step fails
        # on it; the packages left out on purpose (MLflow's server, Ray's dashboard extras) are not listed.
        echo "pip check, version conflicts: $("$PY" -m pip check 2>&1 | grep -v 'which is not installed' || echo none)"
    fi
    echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) files changed"
    echo "date $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
}

{
    echo "# GPU figures ($STAMP)"
    [[ $DRY -eq 1 ]] && echo "DRY RUN on the CPU, tiny shapes: these numbers are not GPU figures."
} >"$OUT"
export -f machine
export PY SITE
step "machine" 60 bash -c machine

# The demo's chain on the carried organisms, every model on DEVICE, in a new run_dir (an earlier one would be
# resumed, its stages skipped).
chain() {  # chain DEVICE
    "$PY" -m cli.main run configs/demo.yaml run_dir="runs/demo-$1-$STAMP-$$" \
        models.source.path=.whl/organisms/source models.source.device="$1" \
        models.target.path=.whl/organisms/target models.target.device="$1"
}
chain_step() {  # chain_step TITLE DEVICE
    if [[ -d .whl/organisms ]]; then
        step "$1" 300 bash -c "chain $2"
    else
        printf '\n## %s\n\nskipped: no .whl/organisms (bash bench/gpu_all.sh --prepare)\n' "$1" >>"$OUT"
    fi
}
export -f chain
export STAMP
if [[ $DRY -eq 1 ]]; then
    SMALL=(--device cpu --shape tiny --batch 2 --seq 32 --batches 3)
    step "bench_gpu: layer 15 (dry run: tiny, CPU)" 300 "$PY" bench/bench_gpu.py "${SMALL[@]}" --layers 15
    step "pytest -m gpu (dry run: collected only)" 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider --collect-only tests
    chain_step "the demo's chain (dry run: CPU)" cpu
    step "bench_gpu: layers 7 15 31 (dry run: tiny, CPU)" 300 "$PY" bench/bench_gpu.py "${SMALL[@]}" --layers 7 15 31 --skip-peers
else
    step "bench_gpu: 8B shape, bf16, layer 15, batch 16 x 1024" 420 "$PY" bench/bench_gpu.py --layers 15
    step "pytest -m gpu (DeepSpeed AutoTP vs HF host over NCCL; extract on CUDA vs CPU)" 300 \
        "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
    chain_step "the demo's chain on CUDA (carried organisms)" cuda
    step "bench_gpu: 8B shape, bf16, layers 7 15 31, batch 8 x 2048" 420 "$PY" bench/bench_gpu.py --layers 7 15 31 \
        --batch 8 --seq 2048 --skip-peers
fi
if [[ -n "${ASIT_MODEL_CACHE:-}" ]]; then
    step "pytest -m real (real checkpoints)" 600 "$PY" -m pytest -m real -q -p no:cacheprovider tests/real
else
    printf '\n## pytest -m real\n\nskipped: ASIT_MODEL_CACHE is not set (import the models first)\n' >>"$OUT"
fi

printf '\nTotal %s s, %s step(s) failed.\n' "$((SECONDS - START))" "$FAILED" >>"$OUT"
echo "gpu_all: wrote $OUT ($((SECONDS - START)) s, $FAILED failed)"
exit $((FAILED > 0))
