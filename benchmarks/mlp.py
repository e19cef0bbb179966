"""The MLP head search on a cell's cached embeddings, as it runs and as it ran before
2026-12-05 (every trial to ``search_epochs`` in fp32, torch's ``Dropout``), timed in one
run, with accuracy:

    python benchmarks/mlp.py [--suite suites/default.toml] [--cell ID]

Needs the cell's embeddings (run the suite once, or let it embed). One JSON line per way,
then one with the ratio, the accuracy difference and the spread of the trials' validation
accuracies (the target: the same accuracy within it). The machine should be otherwise
idle. Both ways use the fused AdamW step. Both are timed after a one-epoch run of each
(``warm-up s``): it pays what a process pays once, whichever way runs first (torch.optim's
first optimiser imports ``torch._dynamo``, 0.84 s; exact search imports faiss).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from probe import machine

TARGETS = {"search s": 10.0}


def timed(data: Any, params: dict[str, Any], before: bool) -> dict[str, Any]:
    """The search as the cell runs it, or ``before``: no halving, fp32, torch's dropout
    (``bernoulli_``)."""
    from unittest import mock

    import torch

    from harness import dropout
    from harness.strategies import STRATEGIES

    strategy = STRATEGIES.get("mlp")
    params = strategy.params({**params, "halving": 1} if before else params)
    if before:
        data = dataclasses.replace(data, precision="fp32")
    layer = torch.nn.Dropout if before else dropout.Dropout
    with mock.patch.object(dropout, "Dropout", layer):
        start = time.perf_counter()
        outcome = strategy.run(data, params)
        seconds = time.perf_counter() - start
    validation = [t["validation_accuracy"] for t in outcome.chosen["trials"]]
    return {
        "way": "before" if before else "now",
        "search s": round(seconds, 2),
        "precision": outcome.chosen["precision"],
        "rungs": outcome.chosen["rungs"],
        "epochs": sum(t["epochs"] for t in outcome.chosen["trials"]),
        "accuracy": round(outcome.metrics["accuracy"], 4),
        "mmp@5": round(outcome.metrics["mmp@5"], 4),
        "trials' validation": [round(min(validation), 4), round(max(validation), 4)],
    }


def main() -> None:
    from harness.cell import context, embeddings, features, strategy_params
    from harness.paths import cache_root
    from harness.suite import load_suite

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", type=Path, default=Path("suites/default.toml"))
    parser.add_argument("--cell", default="fashion-mnist/effnet-lite0/mlp")
    args = parser.parse_args()
    cell = load_suite(args.suite).cell(args.cell)
    ctx = context(cell, cache_root())
    embedded = embeddings(ctx)
    data = features(ctx, embedded["train"], embedded["test"], None)
    import torch

    params = strategy_params(ctx)
    start = time.perf_counter()
    for way in (False, True):  # what a process pays once, in neither way's time
        timed(data, {**params, "trials": 1, "search_epochs": 1, "max_epochs": 1}, way)
    warm_up = time.perf_counter() - start
    now, before = timed(data, params, before=False), timed(data, params, before=True)
    for line in (now, before):
        print(
            json.dumps({**line, "cell": cell.id, "machine": machine(), "torch": torch.__version__})
        )
    print(json.dumps({
        "before / now": round(before["search s"] / now["search s"], 2),
        "search s": now["search s"],
        "accuracy difference": round(now["accuracy"] - before["accuracy"], 4),
        "warm-up s": round(warm_up, 2),
        "targets": TARGETS,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
