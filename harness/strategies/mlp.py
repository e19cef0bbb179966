"""Top-tuning with an MLP head on frozen embeddings, its shape and optimiser searched."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.runtime import cpu_training, torch_computes
from harness.settings import Count, Counts, Depths, PositiveRange, Seed, Share, Table, Tolerance
from harness.stats import classification_items
from harness.strategies.base import CLASSIFICATION, RETRIEVAL, Features, Outcome, strategy
from harness.strategies.knn import retrieval
from harness.strategies.linear import stratified_holdout

if TYPE_CHECKING:
    import torch


def build_head(
    d_in: int, n_classes: int, depth: int, width: int, dropout: float
) -> torch.nn.Sequential:
    """``depth`` blocks of Linear → LayerNorm → GELU → Dropout, then a linear classifier."""
    import torch

    layers: list[torch.nn.Module] = []
    for i in range(depth):
        layers += [
            torch.nn.Linear(d_in if i == 0 else width, width),
            torch.nn.LayerNorm(width),
            torch.nn.GELU(),
            torch.nn.Dropout(dropout),
        ]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width if depth else d_in, n_classes))


def train_head(
    config: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    held: torch.Tensor,
    n_classes: int,
    epochs: int,
    params: Mapping[str, Any],
) -> tuple[torch.nn.Sequential, float, int]:
    """AdamW minibatch training with early stopping on validation accuracy; returns the
    best-epoch head, its validation accuracy, and the epochs run."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(params["seed"])
    head = build_head(x.shape[1], n_classes, config["depth"], config["width"], params["dropout"])
    opt = torch.optim.AdamW(head.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    fit_x, fit_y, val_x, val_y = x[~held], y[~held], x[held], y[held]
    generator = torch.Generator().manual_seed(params["seed"])
    best, stale, ran = -1.0, 0, 0
    best_state: dict[str, torch.Tensor] = {}
    while ran < epochs and stale < params["patience"]:
        ran += 1
        head.train()
        for batch in torch.randperm(len(fit_x), generator=generator).split(params["batch_size"]):
            opt.zero_grad()
            F.cross_entropy(head(fit_x[batch]), fit_y[batch]).backward()
            opt.step()
        head.eval()
        with torch.inference_mode():
            accuracy = float((head(val_x).argmax(1) == val_y).float().mean())
        if accuracy > best:
            best, stale = accuracy, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            stale += 1
    head.load_state_dict(best_state)
    return head.eval(), best, ran


def sample(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, Any]:
    """One configuration: log-uniform learning rate and weight decay, depth and width."""

    def log_uniform(bounds: tuple[float, float]) -> float:
        return float(math.exp(rng.uniform(*np.log(bounds))))

    return {
        "lr": log_uniform(params["lr"]),
        "weight_decay": log_uniform(params["weight_decay"]),
        "depth": int(rng.choice(params["depth"])),
        "width": int(rng.choice(params["width"])),
    }


class MlpSettings(Table):
    """``[strategy.mlp]``: the random search (trials, the ranges it samples) and training."""

    trials: Count = 6
    search_epochs: Count = 30
    max_epochs: Count = 300
    patience: Count = 8
    batch_size: Count = 256
    validation: Share = 0.2
    seed: Seed = 0
    lr: PositiveRange = (1e-4, 3e-3)
    weight_decay: PositiveRange = (1e-5, 1e-1)
    depth: Depths = (1, 2, 3)
    width: Counts = (256, 512, 1024)
    dropout: Tolerance = 0.2


@strategy("mlp", CLASSIFICATION + RETRIEVAL, main_metric="accuracy", settings=MlpSettings)
def mlp(data: Features, params: Mapping[str, Any]) -> Outcome:
    """An MLP head (1-3 hidden layers) on frozen embeddings, found by seeded random search.

    ``trials`` configurations (learning rate, weight decay, depth, width) each train up to
    ``search_epochs`` with early stopping on a stratified validation split carved from
    train. If the best was still improving when its trial ended, it trains on up to
    ``max_epochs``, again stopping early on that split (the study: Bayesian search, 30-epoch
    trials, then up to 1000 epochs). Every trial is logged in the row. Retrieval uses the
    head's penultimate layer as the embedding.
    """
    with cpu_training(), torch_computes():
        return _mlp(data, params)


def _mlp(data: Features, params: Mapping[str, Any]) -> Outcome:
    import torch

    start = time.perf_counter()
    mean, std = data.train.mean(0), data.train.std(0) + 1e-6
    x = torch.from_numpy(((data.train - mean) / std).astype(np.float32))
    y = torch.from_numpy(data.train_labels).long()
    held = torch.from_numpy(
        stratified_holdout(data.train_labels, params["validation"], params["seed"])
    )
    rng = np.random.default_rng(params["seed"])
    trials: list[dict[str, Any]] = []
    best_head: torch.nn.Sequential | None = None
    n_fit = int((~held).sum())
    flops = 0.0  # 6 FLOPs per weight per training item (forward and backward)
    for _ in range(params["trials"]):
        config = sample(rng, params)
        head, accuracy, epochs = train_head(
            config, x, y, held, data.n_classes, params["search_epochs"], params
        )
        flops += 6 * sum(p.numel() for p in head.parameters()) * n_fit * epochs
        if not trials or accuracy > max(t["validation_accuracy"] for t in trials):
            best_head = head
        trials.append({**config, "validation_accuracy": accuracy, "epochs": epochs})
    best = max(trials, key=lambda t: t["validation_accuracy"])
    config = {k: best[k] for k in ("lr", "weight_decay", "depth", "width")}
    assert best_head is not None  # trials >= 1
    head, accuracy, epochs = best_head, best["validation_accuracy"], best["epochs"]
    if epochs >= params["search_epochs"]:
        # Still improving when its trial ended: train it longer (same seed, same start).
        head, accuracy, epochs = train_head(
            config, x, y, held, data.n_classes, params["max_epochs"], params
        )
        flops += 6 * sum(p.numel() for p in head.parameters()) * n_fit * epochs
    fitted = time.perf_counter()

    test = torch.from_numpy(((data.test - mean) / std).astype(np.float32))
    penultimate = head[:-1]
    with torch.inference_mode():
        scores = head(test).numpy()
        gallery, queries = penultimate(x).numpy(), penultimate(test).numpy()
    ranked = retrieval(data, gallery, queries, 10).items
    chosen = {
        **config,
        "validation_accuracy": accuracy,
        "epochs": epochs,
        "trials": trials,
        "retrieval_embedding": "penultimate layer of the MLP head",
    }
    items = {**classification_items(data.test_labels, scores), **ranked}
    return Outcome(
        items,
        {"fit": fitted - start, "eval": time.perf_counter() - fitted},
        chosen,
        trainable_params=sum(p.numel() for p in head.parameters()),
        train_gflops=flops / 1e9,
    )
