"""A short check of the CUDA paths, for a machine with a GPU:

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/cuda_check.py

It runs the smoke suite's training cells on the synthetic set (random-init timm test
models, no downloads) and prints, per cell, the device, autocast, accuracy, cost and peak
CUDA memory; it exits non-zero if any cell did not run on the GPU. CI runs it on the CPU
with ``SHELFBENCH_TORCH_PATHS=1`` (the same paths, on the CPU device): then it exits
non-zero if any cell did not take them (autocast in training, the torch probe).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from harness.cell import run_cell
from harness.runtime import device, torch_paths
from harness.suite import load_suite

CELLS = (
    "synthetic-products/test-efficientnet/linear",
    "synthetic-products/test-efficientnet/finetune",
    "synthetic-products/test-efficientnet/partial:1",
    "synthetic-shelf/test-efficientnet/knn",
    "synthetic-shelf/test-efficientnet/cross:synthetic-products",
)


def main() -> int:
    import torch

    print(f"torch {torch.__version__}, device() = {device()}", flush=True)
    if not torch_paths():
        print("no GPU: set SHELFBENCH_TORCH_PATHS=1 to check its paths on the CPU")
        return 1
    if device() == "cuda":
        print(torch.cuda.get_device_name(), flush=True)
    suite = load_suite(Path(__file__).parents[1] / "suites" / "smoke.toml")
    ok = True
    with tempfile.TemporaryDirectory() as cache:
        for cell_id in CELLS:
            start = time.perf_counter()
            result = run_cell(suite.cell(cell_id), Path(cache))
            tuned, cost = result.chosen.get("finetune", {}), result.cost
            assert cost is not None  # every cell that ran has its cost
            row = {
                "cell": cell_id,
                "wall_s": round(time.perf_counter() - start, 2),
                "accuracy": round(result.metrics["accuracy"], 4),
                "losses": [round(e["loss"], 3) for e in tuned.get("history", [])],
                "amp": tuned.get("amp"),
                **vars(cost),
            }
            print(json.dumps(row), flush=True)
            on_gpu = cost.peak_cuda_mb is not None
            ok &= cost.device == device() and (on_gpu or device() == "cpu")
            ok &= tuned.get("amp", "bfloat16") == "bfloat16"  # autocast, where it trained
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
