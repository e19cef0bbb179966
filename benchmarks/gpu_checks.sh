#!/usr/bin/env bash
# The checks of the CUDA code paths, in one command on a GPU machine (not part of CI):
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR]
#
# 1. the unit tests whose code paths differ on a GPU (Pillow-exact resize and ranking on
#    CUDA, bf16 agreement, training batches);
# 2. benchmarks/cuda_check.py (the training cells run on the GPU);
# 3. benchmarks/device_throughput.py N 256 (model-only, data-only, embed, fine-tune img/s);
# 4. benchmarks/scale.py PRESET --linear (the linear probe at the study's size).
#
# Each step's output is kept in OUT_DIR (default $OUT, else ./device-out); a failing or
# timed-out step (STEP_TIMEOUT seconds, default 240) does not stop the next; with STRICT=1
# the script then exits 1 (CI runs it so on the CPU, at a toy size, with the GPU's paths
# forced there: SHELFBENCH_TORCH_PATHS=1). Environment: N (default 20000), BATCH (256),
# PRESET (default products-10k), PYTHON (default python3), SHELFBENCH_DATA (default
# .devdata where it exists: where Fashion-MNIST's idx files are carried).
# Packages the machine lacks travel as wheels (see the device tool's notes): on the H200
# image that was faiss-cpu, open_clip_torch, ftfy and wcwidth (2026-11). On a machine
# without a GPU, run it at a toy size: N=32 BATCH=8 PRESET=toy.
set -u -o pipefail
out=${1:-${OUT:-device-out}}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.
[ -z "${SHELFBENCH_DATA:-}" ] && [ -d .devdata ] && export SHELFBENCH_DATA=.devdata
py=${PYTHON:-python3}
failed=0

step() {
    local name=$1
    shift
    echo "== $name: $*"
    timeout "${STEP_TIMEOUT:-240}" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

{ nvidia-smi -L || echo "no GPU: the CPU takes the GPU's paths"; } 2>&1 | tee "$out/device.log"
step tests "$py" -m pytest -q -p no:cacheprovider -p no:randomly tests/test_resize.py \
    tests/test_search.py tests/test_precision.py tests/test_finetune.py \
    -k "pixels or resize or weights or rank or blocks or bf16"
# On a machine without a GPU, the CPU takes the GPU's paths (a no-op on a GPU).
SHELFBENCH_TORCH_PATHS=1 step cuda_check "$py" benchmarks/cuda_check.py
step throughput "$py" benchmarks/device_throughput.py "${N:-20000}" "${BATCH:-256}"
step scale_linear "$py" benchmarks/scale.py "${PRESET:-products-10k}" --linear
echo "== $failed step(s) failed"
[ "${STRICT:-0}" != 1 ] || [ "$failed" -eq 0 ]
