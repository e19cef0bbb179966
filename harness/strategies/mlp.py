"""Top-tuning with an MLP head on frozen embeddings, its shape and optimiser searched."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from harness.progress import progress_bar
from harness.runtime import computing_at, cpu_training, torch_computes
from harness.settings import Count, Counts, Depths, PositiveRange, Seed, Share, Table, Tolerance
from harness.stats import classification_items
from harness.strategies.base import (
    CLASSIFICATION,
    RETRIEVAL,
    Features,
    Outcome,
    head_precision,
    strategy,
)
from harness.strategies.knn import retrieval
from harness.strategies.linear import stratified_holdout

if TYPE_CHECKING:
    import torch


def build_head(
    d_in: int, n_classes: int, depth: int, width: int, dropout: float
) -> torch.nn.Sequential:
    """``depth`` blocks of Linear → LayerNorm → GELU → Dropout, then a linear classifier."""
    import torch

    from harness.dropout import Dropout

    layers: list[torch.nn.Module] = []
    for i in range(depth):
        layers += [
            torch.nn.Linear(d_in if i == 0 else width, width),
            torch.nn.LayerNorm(width),
            torch.nn.GELU(),
            Dropout(dropout),
        ]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width if depth else d_in, n_classes))


class Trial:
    """One configuration's AdamW minibatch training with early stopping on validation
    accuracy, resumable: it keeps its head, optimiser, data order and its own dropout
    stream, so training it in pieces, between other trials, learns what one stretch
    would."""

    def __init__(
        self,
        config: dict[str, Any],
        split: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        n_classes: int,
        params: Mapping[str, Any],
        precision: str = "fp32",
    ) -> None:
        """``split``: fit items and labels, then validation items and labels; forward
        passes at ``precision`` (bf16 autocast, or fp32)."""
        import torch

        self.config, self.params, self.precision = config, params, precision
        self.fit_x, self.fit_y, self.val_x, self.val_y = split
        with torch.random.fork_rng():
            torch.manual_seed(params["seed"])
            self.head = build_head(
                self.fit_x.shape[1], n_classes, config["depth"], config["width"], params["dropout"]
            )
            self.rng_state = torch.get_rng_state()
        self.opt = torch.optim.AdamW(
            self.head.parameters(),
            lr=config["lr"],
            weight_decay=config["weight_decay"],
            fused=True,  # one pass over the weights: a step in 0.8 ms, not 3.6 (bf16, 2.4 M)
        )
        self.order = torch.Generator().manual_seed(params["seed"])
        self.best, self.stale, self.epochs = -1.0, 0, 0
        self.best_state: dict[str, torch.Tensor] = {}

    @property
    def stopped(self) -> bool:
        """Early-stopped: ``patience`` epochs without a better validation accuracy."""
        return self.stale >= self.params["patience"]

    def train(self, until: int, bar: tqdm | None = None) -> None:
        """Train on to epoch ``until``, or until early stopping, each epoch counted on
        ``bar``."""
        import torch
        import torch.nn.functional as F

        with torch.random.fork_rng():
            torch.set_rng_state(self.rng_state)
            while self.epochs < until and not self.stopped:
                self.epochs += 1
                self.head.train()
                batches = torch.randperm(len(self.fit_x), generator=self.order)
                for batch in batches.split(self.params["batch_size"]):
                    self.opt.zero_grad()
                    with computing_at(self.precision, "cpu"):  # per step: autocast's copies
                        scores = self.head(self.fit_x[batch])  # of weights last one step
                    F.cross_entropy(scores.float(), self.fit_y[batch]).backward()
                    self.opt.step()
                self.head.eval()
                with torch.inference_mode(), computing_at(self.precision, "cpu"):
                    guess = self.head(self.val_x).argmax(1)
                    accuracy = float((guess == self.val_y).float().mean())
                if accuracy > self.best:
                    self.best, self.stale = accuracy, 0
                    self.best_state = {k: v.clone() for k, v in self.head.state_dict().items()}
                else:
                    self.stale += 1
                if bar is not None:
                    shape = f"{self.config['depth']} × {self.config['width']}"
                    bar.set_postfix_str(f"{shape}, best {self.best:.4f}", refresh=False)
                    bar.update()
            self.rng_state = torch.get_rng_state()

    def best_head(self) -> torch.nn.Sequential:
        """A copy of the head at its best validation epoch, in eval mode."""
        head = copy.deepcopy(self.head)
        head.load_state_dict(self.best_state)
        return head.eval()

    def log(self) -> dict[str, Any]:
        """What the row records of the trial: its configuration, best validation
        accuracy and the epochs it trained."""
        return {**self.config, "validation_accuracy": self.best, "epochs": self.epochs}


def rungs(trials: int, halving: int, epochs: int) -> list[int]:
    """The epochs at which successive halving keeps the best 1/``halving`` of the trials
    still training, then the last, ``epochs``: Hyperband's geometric rungs, ``epochs``
    divided by ``halving`` once per halving it takes to leave one trial (rounded up)."""
    halvings = 0
    while halving > 1 and math.ceil(trials / halving**halvings) > 1:
        halvings += 1
    return sorted({math.ceil(epochs / halving**k) for k in range(halvings, -1, -1)})


def trial_epochs(trials: int, halving: int, epochs: int) -> int:
    """The most epochs a search trains, all trials together (fewer where some stop early)."""
    total, alive, done = 0, trials, 0
    for rung in rungs(trials, halving, epochs):
        total += alive * (rung - done)
        alive, done = math.ceil(alive / halving), rung
    return total


def search(trials: list[Trial], halving: int, epochs: int, bar: tqdm | None = None) -> Trial:
    """Successive halving (Jamieson and Talwalkar, 2016): every trial trains to the first
    rung, the best 1/``halving`` by validation accuracy go on to the next, and so on to
    ``epochs``; ``halving = 1`` trains every trial to ``epochs``. The best trial."""
    alive = list(trials)
    for rung in rungs(len(trials), halving, epochs):
        for trial in alive:
            trial.train(rung, bar)
        ranked = sorted(alive, key=lambda t: -t.best)  # stable: the earlier trial wins ties
        alive = ranked[: math.ceil(len(alive) / halving)]
    return max(trials, key=lambda t: t.best)


def epochs_bar(trials: int, epochs: int) -> tqdm:
    """Trial-epochs out of the search's most (``trial_epochs``; early stops end it short,
    training on past the search adds to it), shown once a search has run 5 s."""
    return progress_bar(f"mlp head search, {trials} trials", "epoch", epochs, quiet_for=5)


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
    halving: Count = 3
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

    ``trials`` configurations (learning rate, weight decay, depth, width) train with early
    stopping on a stratified validation split carved from train, by successive halving: all
    to a first rung of epochs, the best 1/``halving`` on to the next, and the best of those
    to ``search_epochs`` (rungs at ``search_epochs`` / ``halving``^k; ``halving = 1``
    trains every trial to ``search_epochs``). If the best was still improving when its
    search ended, it trains on up to ``max_epochs``, again stopping early on that split
    (the study: Bayesian search, 30-epoch trials, then up to 1000 epochs). Every trial is
    logged in the row. Training runs in bf16 autocast where the cell runs bf16 and this
    CPU multiplies bf16 faster (``runtime.cpu_has_bf16``), else fp32; scoring and
    retrieval use the fp32 weights. Retrieval uses the head's penultimate layer as the
    embedding.
    """
    with cpu_training():
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
    split = (x[~held], y[~held], x[held], y[held])
    precision = head_precision(data)
    trials = [
        Trial(sample(rng, params), split, data.n_classes, params, precision)
        for _ in range(params["trials"])
    ]
    most = trial_epochs(len(trials), params["halving"], params["search_epochs"])
    with torch_computes(), epochs_bar(len(trials), most) as bar:
        best = search(trials, params["halving"], params["search_epochs"], bar)
        if best.epochs >= params["search_epochs"] and not best.stopped:
            # still improving when its search ended: train on
            bar.total = bar.n + params["max_epochs"] - best.epochs
            bar.set_description_str("mlp head, training on the best trial", refresh=False)
            best.train(params["max_epochs"], bar)
    head = best.best_head()
    # 6 FLOPs per weight per training item (forward and backward)
    flops = sum(
        6 * sum(p.numel() for p in t.head.parameters()) * len(split[0]) * t.epochs for t in trials
    )
    fitted = time.perf_counter()

    test = torch.from_numpy(((data.test - mean) / std).astype(np.float32))
    penultimate, classifier = head[:-1], head[-1]
    with torch.inference_mode():
        gallery, queries = penultimate(x).numpy(), penultimate(test)
        scores = classifier(queries).numpy()
    # numpy's BLAS on every core
    ranked = retrieval(data, gallery, queries.numpy(), 10).items
    chosen = {
        **best.log(),
        "rungs": rungs(len(trials), params["halving"], params["search_epochs"]),
        "precision": precision,
        "trials": [t.log() for t in trials],
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
