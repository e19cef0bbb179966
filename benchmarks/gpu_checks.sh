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
# timed-out step (STEP_TIMEOUT seconds, default 240) does not stop the next. Environment:
# N (default 20000), PRESET (default products-10k), PYTHON (default python3),
# SHELFBENCH_DATA (default .devdata, where Fashion-MNIST's idx files are carried).
# Packages the machine lacks travel as wheels (see the device tool's notes): on the H200
# image that was faiss-cpu, open_clip_torch, ftfy and wcwidth (2026-11). On a machine
# without a GPU, cuda_check exits 1 and the batch-256 benchmarks outrun their timeout.
set -u -o pipefail
out=${1:-${OUT:-device-out}}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.
export SHELFBENCH_DATA=${SHELFBENCH_DATA:-.devdata}
py=${PYTHON:-python3}

step() {
    local name=$1
    shift
    echo "== $name: $*"
    timeout "${STEP_TIMEOUT:-240}" "$@" 2>&1 | tee "$out/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

nvidia-smi -L 2>&1 | tee "$out/device.log"
step tests "$py" -m pytest -q -p no:cacheprovider -p no:randomly tests/test_resize.py \
    tests/test_search.py tests/test_precision.py tests/test_finetune.py \
    -k "pixels or resize or weights or rank or blocks or bf16"
step cuda_check "$py" benchmarks/cuda_check.py
step throughput "$py" benchmarks/device_throughput.py "${N:-20000}" 256
step scale_linear "$py" benchmarks/scale.py "${PRESET:-products-10k}" --linear
