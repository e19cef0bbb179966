"""The default cell's linear probe on its cached embeddings, as it runs and as it ran
before 2026-12-04 (numpy's BLAS threads free to spin beside torch's, a 10-step L-BFGS
memory, IEEE fp32 products, every C of the grid, no ``ftol`` stop), timed in one run,
with their accuracy:

    python benchmarks/probe.py [--suite suites/default.toml] [--cell ID]

Needs the cell's embeddings (run the suite once, or let it embed). One JSON line per way,
then one with the ratio and the accuracy difference. The machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

TARGETS = {"probe s": 3.0, "accuracy difference": 0.001}


def timed(data: Any, before: bool) -> dict[str, Any]:
    """The probe as the strategy runs it, or ``before``: numpy's BLAS threads left free to
    spin beside torch's, an L-BFGS memory of 10, fp32 products, the whole C grid and no
    ``ftol`` stop (the torch objective and the Wolfe line search are in both)."""
    from harness.strategies import STRATEGIES, linear

    strategy = STRATEGIES.get("linear")
    params = strategy.params({})
    with ExitStack() as stack:
        if before:
            stack.enter_context(mock.patch.object(linear, "HISTORY", (10, 10)))
            stack.enter_context(mock.patch.object(linear, "FTOL", 0.0))
            data = dataclasses.replace(data, precision="fp32")
            params = {**params, "patience": len(params["C"])}
        start = time.perf_counter()
        outcome = linear._linear(data, params) if before else strategy.run(data, params)
        seconds = time.perf_counter() - start
    accuracy = round(outcome.metrics["accuracy"], 4)
    return {"way": "before" if before else "now", "probe s": round(seconds, 2),
            "C": outcome.chosen["C"], "precision": outcome.chosen["precision"],
            "validation accuracy": outcome.chosen["validation_accuracy"],
            "accuracy": accuracy}  # fmt: skip


def machine() -> str:
    """The CPU's model name, whether it has AMX (bf16 matrix units), and how many times
    fp32's rate it multiplies at in bf16 (``runtime.bf16_speedup``; 0: not timed)."""
    from harness.runtime import bf16_speedup

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line]
    amx = ", AMX" if "amx_bf16" in text else ""
    return f"{names[0] if names else platform.machine()}{amx}, bf16 {bf16_speedup()}x fp32"


def main() -> None:
    from harness.cell import context, embeddings, features
    from harness.paths import cache_root
    from harness.suite import load_suite

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", type=Path, default=Path("suites/default.toml"))
    parser.add_argument("--cell", default="fashion-mnist/effnet-lite0/linear")
    args = parser.parse_args()
    cell = load_suite(args.suite).cell(args.cell)
    ctx = context(cell, cache_root())
    embedded = embeddings(ctx)
    data = features(ctx, embedded["train"], embedded["test"], None)
    import torch

    now, before = timed(data, before=False), timed(data, before=True)
    for line in (now, before):
        print(
            json.dumps({**line, "cell": cell.id, "machine": machine(), "torch": torch.__version__})
        )
    print(json.dumps({
        "before / now": round(before["probe s"] / now["probe s"], 2),
        "probe s": now["probe s"],
        "accuracy difference": round(now["accuracy"] - before["accuracy"], 4),
        "targets": TARGETS,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
