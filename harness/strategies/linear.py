"""Top-tuning with a linear probe on frozen embeddings."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness import metrics
from harness.search import l2_normalise
from harness.stats import classification_items
from harness.strategies import lbfgs
from harness.strategies.base import CLASSIFICATION, Features, Outcome, strategy

Solution = tuple[np.ndarray, np.ndarray]


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded validation sample: ``fraction`` of each class (at least one
    item of every class with two or more)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) > 1:
            held[members[: max(1, round(fraction * len(members)))]] = True
    return held


def softmax_objective(
    x: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float
) -> lbfgs.Objective:
    """θ = (W, b) ↦ mean_n CE(x_n W + b, y_n) + (λ/2)·‖W‖², and its gradient."""
    n, d = x.shape
    onehot = np.eye(n_classes, dtype=np.float32)[y]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = unpack(theta, d, n_classes)
        logits = x @ w.astype(np.float32) + b.astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -float(np.sum(onehot * log_p, dtype=np.float64)) / n
        loss += 0.5 * weight_decay * float(w.ravel() @ w.ravel())
        residual = (np.exp(log_p) - onehot) / n
        grad_w = (x.T @ residual).astype(np.float64) + weight_decay * w
        return loss, np.concatenate([grad_w.ravel(), residual.sum(axis=0, dtype=np.float64)])

    return objective


def unpack(theta: np.ndarray, d: int, n_classes: int) -> Solution:
    return theta[: d * n_classes].reshape(d, n_classes), theta[d * n_classes :]


def fit_softmax(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    weight_decay: float,
    max_iter: int,
    init: Solution | None = None,
    gtol: float = 1e-6,
    passes: list[int] | None = None,
) -> Solution:
    """Multinomial logistic regression by L-BFGS, from ``init`` (a warm start) or zeros;
    appends to ``passes`` how many times it evaluated the objective over ``x``."""
    d = x.shape[1]
    start = (
        np.zeros(d * n_classes + n_classes)
        if init is None
        else np.concatenate([init[0].ravel(), init[1]])
    )
    objective = softmax_objective(x, y, n_classes, weight_decay)
    calls = 0

    def counted(theta: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        calls += 1
        return objective(theta)

    theta = lbfgs.minimize(counted, start, max_iter, gtol=gtol)
    if passes is not None:
        passes.append(calls)
    return unpack(theta, d, n_classes)


@strategy(
    "linear",
    CLASSIFICATION,
    main_metric="accuracy",
    C=(0.1, 1.0, 10.0, 100.0, 1000.0),
    validation=0.2,
    max_iter=1000,
    tol=1e-5,
    seed=0,
)
def linear(data: Features, params: Mapping[str, Any]) -> Outcome:
    """A softmax linear probe (L-BFGS) on L2-normalised embeddings: scikit-learn's
    ``LogisticRegression(C)``, whose objective is mean cross-entropy + ‖W‖² / (2·C·n).

    C is chosen on a stratified validation split carved from train, walking the grid from
    strongest to weakest regularisation with warm starts (a regularisation path, as glmnet
    does); ties go to the stronger. The probe is then refit on all of train with that C,
    from the chosen solution. The test split is touched only for the final scores. Each
    fit runs until the largest gradient entry is below ``tol`` (scikit-learn's default
    1e-4 stopped short of its own C=10 optimum on the default cell). On the default cell's
    embeddings it chooses what scikit-learn chooses on the same split, C = 10, and scores
    the same test accuracy, 0.8845, in 23 s where scikit-learn took 60 s (2026-11-28).
    """
    start = time.perf_counter()
    x, y = l2_normalise(data.train), data.train_labels
    held = stratified_holdout(y, params["validation"], params["seed"])
    path: dict[float, Solution] = {}
    val_accuracy: dict[float, float] = {}
    solution = None
    n_fit = int((~held).sum())
    fit_passes: list[int] = []
    for c in sorted(params["C"]):
        decay = 1 / (c * n_fit)
        solution = fit_softmax(
            x[~held],
            y[~held],
            data.n_classes,
            decay,
            params["max_iter"],
            solution,
            params["tol"],
            fit_passes,
        )
        path[c] = solution
        predicted = np.argmax(x[held] @ solution[0] + solution[1], axis=1)
        val_accuracy[c] = float(metrics.correct(y[held], predicted).mean())
    best = max(val_accuracy, key=lambda c: (val_accuracy[c], -c))
    refit_passes: list[int] = []
    decay = 1 / (best * len(y))
    w, b = fit_softmax(
        x, y, data.n_classes, decay, params["max_iter"], path[best], params["tol"], refit_passes
    )
    fitted = time.perf_counter()

    scores = l2_normalise(data.test) @ w + b
    chosen = {
        "C": best,
        "validation_accuracy": {str(c): a for c, a in val_accuracy.items()},
        "validation": params["validation"],
        "seed": params["seed"],
    }
    # Each evaluation of the objective is one forward and backward pass (6 FLOPs per
    # weight per item) over the items it fits.
    items_passed = n_fit * sum(fit_passes) + len(x) * sum(refit_passes)
    return Outcome(
        classification_items(data.test_labels, scores),
        {"fit": fitted - start, "eval": time.perf_counter() - fitted},
        chosen,
        trainable_params=w.size + b.size,
        train_gflops=6 * w.size * items_passed / 1e9,
    )
