"""Strategies that fine-tune the backbone first (``harness.finetune``), then evaluate the
tuned backbone's cached embeddings: full and partial fine-tuning, and cross-tuning."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from harness.errors import SuiteError
from harness.stats import classification_items
from harness.strategies.base import (
    CLASSIFICATION,
    RETRIEVAL,
    STRATEGIES,
    Features,
    Outcome,
    Tuning,
    strategy,
)
from harness.strategies.knn import retrieval
from harness.training import TrainSettings


def _blocks(argument: str) -> Tuning:
    if not argument.isdigit() or int(argument) < 1:
        raise SuiteError(f"partial:{argument}: N must be a whole number of blocks, 1 or more")
    return Tuning(blocks=int(argument))


def _dataset(argument: str) -> Tuning:
    """``cross:NAME``: the suite checks NAME against its catalogue."""
    return Tuning(dataset=argument)


def evaluate_tuned(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Classification by the fine-tuned head; retrieval on the fine-tuned embeddings
    (query = test, gallery = train)."""
    if data.head is None:
        raise SuiteError("a fine-tuning strategy ran without its fine-tuned head")
    start = time.perf_counter()
    weight, bias = data.head
    scores = data.test @ weight.T + bias
    ranked = retrieval(data, data.train, data.test, 10).items
    items = {**classification_items(data.test_labels, scores), **ranked}
    return Outcome(items, {"fit": 0.0, "eval": time.perf_counter() - start})


@strategy(
    "finetune",
    CLASSIFICATION + RETRIEVAL,
    main_metric="accuracy",
    tuning=lambda _: Tuning(),
    settings=TrainSettings,
)
def finetune(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Full fine-tuning: every backbone weight trains with a linear classification head.

    AdamW, linear warmup then cosine, label smoothing, gradient clipping, light augmentation
    (random resized crop, flip); bf16 autocast only on CUDA, fp32 on the CPU. Classifies
    with the trained head; retrieves with the tuned embeddings.
    """
    return evaluate_tuned(data, params)


@strategy(
    "partial",
    CLASSIFICATION + RETRIEVAL,
    main_metric="accuracy",
    tuning=_blocks,
    argument="N",
    settings=TrainSettings,
)
def partial(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Partial fine-tuning: the last N blocks train with the head, the rest stays frozen.

    Blocks are timm's coarse parameter groups (stages of a CNN, blocks of a ViT) or an
    open_clip ViT's residual blocks; what follows the last block (final norm, head conv,
    projection) trains too. Frozen batch norms keep their statistics. Trains as
    ``finetune`` does.
    """
    return evaluate_tuned(data, params)


@strategy(
    "cross",
    CLASSIFICATION + RETRIEVAL,
    main_metric="mmp@5",
    tuning=_dataset,
    argument="DATASET",
    inherits="finetune",
    settings=TrainSettings,
)
def cross(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Cross-tuning: fine-tuned on DATASET, then kNN and a linear probe on the cell's data.

    Fine-tuning uses the suite's ``[strategy.finetune]`` settings, so a finetune cell of
    DATASET with the same backbone shares its run (trained here if absent).
    """
    start = time.perf_counter()
    linear = STRATEGIES.get("linear")
    probe = linear.run(data, linear.defaults)
    ranked = retrieval(data, data.train, data.test, 10).items
    return Outcome(
        {**probe.items, **ranked},
        {"fit": probe.seconds["fit"], "eval": time.perf_counter() - start - probe.seconds["fit"]},
        {"probe": probe.chosen},
        probe.trainable_params,
        probe.train_gflops,
    )
