#!/usr/bin/env bash
# The GPU checks (kernels, EMA, decoding, training curve, bf16, benchmark) on a CUDA card,
# in one bounded run (8 minutes at most), in this order:
#   0. a probe of the SDPA kernels on Mega-chunk's shapes,
#   1. the `gpu` tests without FlexAttention (backends vs the reference, EMA, decoding, 20-step
#      loss curve, bf16 autocast),
#   2. the LRA Text sweep, bf16, batch 25: Mega-chunk, Mega, XFM‡ (SDPA/flash and math),
#      transformers' Mega (4.41.2 from the carried wheels), L = 1K..16K,
#   3. Path-X (Mega, laplace, full attention and C = 4096, L = 16K, batch 2),
#   4. the FlexAttention `gpu` tests (compiles per shape, hence after the benchmarks),
#   5. the softmax kernels at 4K: flex and reference beside the sweep's auto (= CUDA_AUTO),
#   6. torch.compile of the whole model at 4K (compile time apart).
# Run from the repository root on the card (docs/gpu.md has the exact `run` call):
#   PYTHONPATH=. bash tools/gpu/check.sh
# Writes under $OUT (default runs/gpu-check): check.log (everything), tests.txt,
# text/bench.{json,md,png}, extra.json (the other runs) and summary.md (printed last).
# DEADLINE (seconds, default 480) bounds the whole script: each stage gets what is left.
# SMOKE=1 DEVICE=cpu runs the same stages on tiny sizes, to check the script without a card.
set -uo pipefail

OUT=${OUT:-runs/gpu-check}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-480}
SMOKE=${SMOKE:-0}
SITE=${HF_SITE:-/tmp/mega-lra-hfsite}
WORK=$(mktemp -d /tmp/mega-lra-check.XXXXXX)
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-.}
mkdir -p "$OUT"
LOG="$OUT/check.log"
T0=$(date +%s)

log() { echo "[check $(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }

# stage NAME LIMIT_SECONDS CMD...: run with min(LIMIT, time left) and record the exit status;
# an argument @BUDGET@ becomes that limit minus 30 s (the bench's --time-budget: it starts no
# new case after it, and still writes its outputs)
stage() {
    local name=$1 limit=$2 left arg
    shift 2
    left=$((DEADLINE - ($(date +%s) - T0)))
    if ((left < 40)); then
        log "skip $name: ${left}s left of DEADLINE=${DEADLINE}"
        echo "$name skipped (deadline)" >>"$WORK/status"
        return
    fi
    ((limit > left)) && limit=$left
    local cmd=()
    for arg in "$@"; do
        [[ $arg == @BUDGET@ ]] && arg=$((limit - 30))
        cmd+=("$arg")
    done
    log "start $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "${cmd[@]}" 2>&1 | tee -a "$LOG" "$WORK/$name.log"
    local rc=${PIPESTATUS[0]}
    log "end $name: exit $rc"
    echo "$name exit $rc" >>"$WORK/status"
}

log "repo $(git rev-parse --short HEAD 2>/dev/null || echo '?'), OUT=$OUT, DEVICE=$DEVICE"
{ nvidia-smi || true; } 2>&1 | tee -a "$LOG"
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available()
else None)" 2>&1 | tee -a "$LOG"

# transformers 4.41.2 for the transformers rows, into its own folder (only the bench's
# transformers rows import it; the card's transformers 5 stays as it is)
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl 2>&1 | tail -3 | tee -a "$LOG"
else
    log "no .whl/*.whl: the transformers rows are skipped (run tools/gpu/fetch_wheels.sh, carry .whl)"
fi

if [[ $SMOKE == 1 ]]; then
    SIZE=(--size tiny) PATHX=(--size tiny) LENGTHS=(64 128) L4=128 TESTS=(-m gpu)
    BENCH=(--repeats 1 --warmup 1)
else
    SIZE=(--size text) PATHX=(--size pathx) LENGTHS=(1024 2048 4096 8192 16384) L4=4096
    TESTS=(-m gpu) BENCH=(--repeats 3 --warmup 1 --peak-gflops 790000)
fi
COMMON=(--device "$DEVICE" --dtype bfloat16 --max-step-seconds 5 "${BENCH[@]}")

# 0. which SDPA kernels take Mega-chunk's biased attention (bf16, bias with gradient)
stage probe 40 "$PY" tools/gpu/probe.py

# 1. tests without FlexAttention (per-test limit: a hang costs one test, not the run)
TIMEOUT_OPT=()
"$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_OPT=(--timeout 150)
TEST_FILES=(tests/layers/test_gpu_attention.py tests/training/test_gpu_training.py tests/layers/test_autocast.py)
stage tests 150 "$PY" -m pytest "${TEST_FILES[@]}" "${TESTS[@]}" -k "not flex" \
    -p no:cacheprovider -q -rs --durations=8 "${TIMEOUT_OPT[@]}"

# 2. the LRA Text sweep with the default backend (auto)
stage text 170 "$PY" -m mega_lra.bench "${COMMON[@]}" "${SIZE[@]}" --lengths "${LENGTHS[@]}" \
    --models mega_chunk mega transformer transformer_math hf_mega_chunk hf_mega \
    --hf-site "$SITE" --time-budget @BUDGET@ --out "$OUT/text"

# 3. Path-X at 16K, the recipe's batch (2)
stage pathx 60 "$PY" -m mega_lra.bench "${COMMON[@]}" "${PATHX[@]}" --lengths $((L4 * 4)) \
    --models mega mega_chunk --no-hf --time-budget @BUDGET@ --out "$WORK/pathx"

# 4. the FlexAttention tests (each new shape compiles: slow, so after the benchmarks above)
stage tests-flex 150 "$PY" -m pytest "${TEST_FILES[@]}" "${TESTS[@]}" -k flex \
    -p no:cacheprovider -q -rs --durations=8 "${TIMEOUT_OPT[@]}"
# tests.txt: each pytest stage's counts, then its failures and skips
for name in tests tests-flex; do
    counts=$(grep -E "[0-9]+ (passed|failed|skipped|errors?)" "$WORK/$name.log" 2>/dev/null |
        tail -1)
    echo "$name: ${counts:-no summary (cut short or skipped; see check.log)}"
done >"$OUT/tests.txt"
for name in tests tests-flex; do
    sed -n '/short test summary/,$p' "$WORK/$name.log" 2>/dev/null
done >>"$OUT/tests.txt"

# 5. the other softmax kernels at 4K
for backend in flex reference; do
    stage "$backend" 90 "$PY" -m mega_lra.bench "${COMMON[@]}" "${SIZE[@]}" --lengths "$L4" \
        --models mega_chunk mega --no-hf --no-forward --attention-backend "$backend" \
        --time-budget @BUDGET@ --out "$WORK/$backend"
done

# 6. torch.compile of the whole model (auto backend)
stage compile 120 "$PY" -m mega_lra.bench "${COMMON[@]}" "${SIZE[@]}" --lengths "$L4" \
    --models mega_chunk mega --no-hf --no-forward --compile --time-budget @BUDGET@ \
    --out "$WORK/compile"

"$PY" tools/gpu/summarize.py --out "$OUT" --text "$OUT/text" --status "$WORK/status" \
    --extra pathx="$WORK/pathx" flex="$WORK/flex" reference="$WORK/reference" \
    compile="$WORK/compile" 2>&1 | tee -a "$LOG"
log "done in $(($(date +%s) - T0))s"
