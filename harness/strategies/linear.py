"""Top-tuning with a linear probe on frozen embeddings."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from harness import metrics
from harness.progress import progress_bar
from harness.search import l2_normalise
from harness.settings import Count, Positives, Seed, Share, Table
from harness.stats import classification_items
from harness.strategies import lbfgs
from harness.strategies.base import CLASSIFICATION, Features, Outcome, head_precision, strategy

# (weights, bias): numpy arrays, or torch tensors while a solve runs on CUDA
Solution = tuple[Any, Any]


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


# Logits per chunk of the objective: chunk × classes floats, never N × C (141,931 ×
# 9,691 float32 would be 5.5 GB for Products-10K). 128 MiB of them: a pass over
# Products-10K's fit split took 16.5-18.1 s in chunks of 432 to 6,924 rows, 18.9 s in
# chunks of 16,384 (2026-12-05, 2-vCPU AMD EPYC, oneDNN's bf16 arithmetic).
CHUNK_LOGITS = 2**25
# What L-BFGS may keep of its past steps (pairs of float64 vectors of θ's size): 100 of
# them where they fit, which took the default cell's C path from 949 passes over the data
# to 322 (2026-12-04); 10 for Products-10K, whose θ alone is 99 MB.
HISTORY_BYTES = 256 * 2**20
HISTORY = (10, 100)
# Where L-BFGS stops for a relative decrease: scipy's L-BFGS-B default (factr 1e7 × float64's
# epsilon), not scikit-learn's 64 × epsilon, as the objective is summed from float32 terms.
# At thousands of classes its gradient stops shrinking a few times above ``tol`` and the
# search spent passes on changes of 1e-11 of the value: on a 969-class lookalike of
# Products-10K (``benchmarks/scale.py``'s at a tenth of its size, spread 0.2) this stop
# took the C path from 329 passes to 151, and no validation accuracy moved by more than
# 0.0004 (2026-12-05, 2-vCPU AMD EPYC, avx512_bf16, no amx_bf16).
FTOL = 1e7 * float(np.finfo(np.float64).eps)
# The C path's fits only rank the Cs on validation, and the refit (at ``FTOL``) starts
# from the chosen one, so they stop at a relative decrease of 1e-5. On the 969-class
# lookalike the probe took 5,370 GFLOP against 8,507 with every fit at ``FTOL``: the same
# C, validation accuracies within 0.0007, test accuracy 0.5296 both; on the default cell
# 174 against 184, the same C, accuracy 0.8830 both (2026-12-05, 2-vCPU AMD EPYC,
# avx512_bf16, no amx_bf16).
PATH_FTOL = 1e-5


# How many of its last evaluations ``CrossEntropy`` keeps. A fit ends at the last point it
# evaluated, or, where its last line search found no step, at the point that search set
# out from, as many evaluations back as it tried (two, on the lookalikes of
# ``benchmarks/scale.py``).
REMEMBERED = 4


class CrossEntropy:
    """θ = (W, b) ↦ mean_n CE(x_n W + b, y_n) and its gradient, over row chunks of the
    float32 features ``x`` (a torch tensor, on a GPU or the CPU); θ and the gradient are
    float64, numpy arrays or tensors on ``x``'s device as θ is given.

    It keeps its last ``REMEMBERED`` θs and their answers, so a fit that starts where the
    one before it ended costs no pass: the C path's warm starts, and its first fit, at
    the zero weights ``gtol`` was computed at (each θ and gradient: 119 MB of float64s
    for Products-10K at 768-d). ``passes`` counts the passes it made."""

    def __init__(self, x: Any, y: Any, n_classes: int) -> None:
        self.x, self.y, self.n_classes = x, y, n_classes
        self.passes = 0
        self.kept: deque[tuple[Any, float, Any]] = deque(maxlen=REMEMBERED)

    def __call__(self, theta: Any) -> tuple[float, Any]:
        for kept, value, grad in self.kept:
            if same(kept, theta):
                return value, grad
        value, grad = self.compute(theta)
        self.kept.append((1.0 * theta, value, grad))
        self.passes += 1
        return value, grad

    def compute(self, theta: Any) -> tuple[float, Any]:
        import torch

        x, y, n_classes = self.x, self.y, self.n_classes
        n, d = x.shape
        rows_per_chunk = max(1, CHUNK_LOGITS // n_classes)
        w64, b64 = unpack(torch.as_tensor(theta, device=x.device), d, n_classes)
        w, b = w64.float(), b64.float()
        loss = torch.zeros((), dtype=torch.float64, device=x.device)
        # Wᵀ's gradient, summed in the product itself: MKL ran residualᵀ @ x 3x faster
        # than xᵀ @ residual
        grad_wt = torch.zeros(n_classes, d, device=x.device)
        grad_b = torch.zeros_like(b64)
        # one buffer for every chunk's logits, not fresh memory to fault in for each:
        # 0.09 M page faults a pass over 55,375 items against 0.59 M, 2-3% faster
        # (2-vCPU AMD EPYC, 2026-12-06)
        tiles = torch.empty(min(rows_per_chunk, n) * n_classes, device=x.device)
        for start in range(0, n, rows_per_chunk):
            xc, yc = x[start : start + rows_per_chunk], y[start : start + rows_per_chunk]
            logits = torch.addmm(b, xc, w, out=tiles[: len(xc) * n_classes].view(-1, n_classes))
            rows = torch.arange(len(yc), device=x.device)
            target = logits[rows, yc]
            # softmax in place with one exp: cross-entropy is log Σ exp(z - m) + m - z_y
            top = logits.amax(1, keepdim=True)
            residual = logits.sub_(top).exp_()
            total = residual.sum(1, keepdim=True)
            loss += (total.log() + top).squeeze(1).sub_(target).double().sum()
            residual.div_(total)
            residual[rows, yc] -= 1
            grad_wt.addmm_(residual.T, xc)
            grad_b += residual.sum(0)
        grad = torch.cat([(grad_wt.T.double() / n).reshape(-1), grad_b / n])
        return loss.item() / n, grad.cpu().numpy() if isinstance(theta, np.ndarray) else grad


def same(a: Any, b: Any) -> bool:
    """Whether two θs, numpy arrays or torch tensors, are equal to the bit."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    import torch

    return a.shape == b.shape and a.device == b.device and bool(torch.equal(a, b))


def softmax_objective(
    x: Any, y: Any, n_classes: int, weight_decay: float, data: CrossEntropy | None = None
) -> lbfgs.Objective:
    """θ = (W, b) ↦ mean_n CE(x_n W + b, y_n) + (λ/2)·‖W‖², and its gradient: ``data``'s
    cross-entropy (``CrossEntropy`` over ``x`` and ``y`` where none is given) plus the
    weight decay."""
    data = CrossEntropy(x, y, n_classes) if data is None else data
    weights = x.shape[1] * n_classes

    def objective(theta: Any) -> tuple[float, Any]:
        value, grad = data(theta)
        w = theta[:weights]
        decayed = 1.0 * grad  # the cross-entropy keeps its own
        decayed[:weights] += weight_decay * w
        return value + 0.5 * weight_decay * float(w @ w), decayed

    return objective


def predict(x: Any, solution: Solution) -> np.ndarray:
    """The class each row of the torch features ``x`` scores highest under ``solution``,
    in chunks of ``CHUNK_LOGITS`` logits, by torch at the caller's precision: numpy, on
    the one BLAS thread ``runtime.torch_computes`` leaves it, took 5.4 s for Products-10K's
    validation split, torch 1.3 s (2026-12-05, 2-vCPU AMD EPYC, avx512_bf16, no
    amx_bf16)."""
    import torch

    w, b = (torch.as_tensor(part, device=x.device).float() for part in solution)
    rows = max(1, CHUNK_LOGITS // w.shape[1])
    chunks = [torch.addmm(b, x[i : i + rows], w).argmax(1) for i in range(0, len(x), rows)]
    return torch.cat(chunks).cpu().numpy()


def scores(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``x @ weight + bias`` in IEEE fp32, by torch on the run's device: Products-10K's
    test split (55,375 × 768 × 9,691) took 4.5 s against 10.9 s in numpy on one BLAS
    thread (2026-12-05, 2-vCPU AMD EPYC, avx512_bf16, no amx_bf16)."""
    import torch

    from harness.runtime import cpu_matmuls

    with cpu_matmuls("fp32"):
        return torch.addmm(*on_device(bias, x, weight)).cpu().numpy()


def unpack(theta: Any, d: int, n_classes: int) -> Solution:
    return theta[: d * n_classes].reshape(d, n_classes), theta[d * n_classes :]


def on_device(*arrays: np.ndarray) -> tuple[Any, ...]:
    """The arrays as torch tensors on the run's device. On a CPU too: torch's BLAS (MKL)
    runs the probe's two products 2x faster than numpy's OpenBLAS did on the default cell
    (4.0 against 8.5 ms per pass, 2026-12-04, 2-core AMX Xeon), and no
    ``OPENBLAS_CORETYPE`` can slow it."""
    import torch

    from harness.runtime import device

    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device()) for a in arrays)


def state_on_device(x: Any) -> bool:
    """Whether L-BFGS keeps θ as tensors on ``x``'s device: on a GPU (and where
    ``runtime.torch_paths()`` asks for the GPU's paths), so θ never goes to the host; as
    numpy on a CPU, whose arithmetic on small vectors costs less than torch's calls."""
    from harness.runtime import torch_paths

    return x.device.type != "cpu" or torch_paths()


def host(solution: Solution) -> Solution:
    """A solution as numpy arrays, wherever it was computed."""
    w, b = solution
    return (w.cpu().numpy(), b.cpu().numpy()) if hasattr(w, "cpu") else (w, b)


def flat(like: Any, init: Solution | None, size: int) -> Any:
    """θ as one float64 vector where L-BFGS keeps it for the features ``like``: ``init``,
    or zeros."""
    if not state_on_device(like):
        if init is None:
            return np.zeros(size)
        w, b = host(init)
        return np.concatenate([w.ravel(), b])
    import torch

    if init is None:
        return torch.zeros(size, dtype=torch.float64, device=like.device)
    w, b = (torch.as_tensor(part, device=like.device) for part in init)
    return torch.cat([w.reshape(-1), b])


# Rows the weights' scale against the bias is estimated from (``balance``): 3.6 ms for
# 1,280-d features, 86 ms for 8,192 rows, whose float32s overflow the cache (2026-12-05,
# 2-vCPU AMD EPYC, avx512_bf16, no amx_bf16).
BALANCE_ROWS = 2048


def balance(x: Any, n_classes: int, weight_decay: float) -> float:
    """How much L-BFGS scales the weights against the bias (``lbfgs.minimize``'s
    ``scale``): 1 / sqrt(σ + λK), σ the largest eigenvalue of the features' second moment
    xᵀx / n, λ the weight decay, K the classes.

    At zero weights the mean cross-entropy's Hessian is (xᵀx / n) ⊗ A in the weights, plus
    λ, and A in the bias (a feature that is always 1), A the softmax's covariance, whose
    eigenvalues are 1/K. L2-normalised features spread xᵀx / n's unit trace over their
    dimensions: where they are spread evenly, classes many and λ small, the bias's
    curvature is up to hundreds of times the weights', and L-BFGS's steps, sized to the
    stiffest direction, crawl in the others. This scale makes the two blocks' largest
    curvatures equal. Where embeddings share a strong common direction (σ near 1, as
    the default cell's: 0.36) it is near 1. σ comes from ten steps of power iteration,
    from the features' mean, on ``BALANCE_ROWS`` evenly spaced rows."""
    rows = x[:: max(1, len(x) // BALANCE_ROWS)].contiguous()
    v = rows.mean(0) + 1 / rows.shape[1] ** 0.5  # never zero
    for _ in range(10):
        v = rows.T @ (rows @ v)
        v /= v.norm()
    sigma = float((rows @ v).square().mean())
    return 1 / (sigma + weight_decay * n_classes) ** 0.5


def fit_softmax(
    x: Any,
    y: Any,
    n_classes: int,
    weight_decay: float,
    max_iter: int,
    init: Solution | None = None,
    gtol: float = 1e-6,
    passes: list[int] | None = None,
    bar: tqdm | None = None,
    ftol: float = FTOL,
    data: CrossEntropy | None = None,
    warm: lbfgs.Warm | None = None,
) -> Solution:
    """Multinomial logistic regression by L-BFGS on torch features (``on_device``), from
    ``init`` (a warm start) or zeros, until ``gtol`` or ``ftol`` (``lbfgs.minimize``),
    with the weights balanced against the bias (``balance``); appends to ``passes`` how
    many passes over ``x`` it made, and counts them on ``bar``. ``data`` is the
    cross-entropy over ``x`` and ``y`` and ``warm`` L-BFGS's first step, where the caller
    keeps them across fits."""
    d = x.shape[1]
    data = CrossEntropy(x, y, n_classes) if data is None else data
    objective = softmax_objective(x, y, n_classes, weight_decay, data)
    before = data.passes

    def counted(theta: Any) -> tuple[float, Any]:
        made = data.passes
        found = objective(theta)
        if bar is not None:
            bar.update(data.passes - made)
        return found

    size = d * n_classes + n_classes
    history = min(max(HISTORY_BYTES // (16 * size), HISTORY[0]), HISTORY[1])
    weights = np.full((d, n_classes), balance(x, n_classes, weight_decay))
    scale = flat(x, (weights, np.ones(n_classes)), size)
    theta = lbfgs.minimize(counted, flat(x, init, size), max_iter, history, gtol, ftol, scale, warm)
    if passes is not None:
        passes.append(data.passes - before)
    return unpack(theta, d, n_classes)


class LinearSettings(Table):
    """``[strategy.linear]``: the C grid, the validation split that chooses from it, when
    the path stops, and when L-BFGS stops."""

    C: Positives = (0.1, 1.0, 10.0, 100.0, 1000.0)
    validation: Share = 0.2
    patience: Count = 1  # Cs in a row no better on validation before the path stops
    max_iter: Count = 1000
    tol: Share = 1e-3  # relative to the gradient at zero weights
    seed: Seed = 0


def regularisation_path(
    x: np.ndarray,
    y: np.ndarray,
    held: np.ndarray,
    n_classes: int,
    params: Mapping[str, Any],
    bar: tqdm | None = None,
    warm: lbfgs.Warm | None = None,
) -> tuple[dict[float, Solution], dict[float, float], float, list[int]]:
    """Fit each C of ``params["C"]`` on the items not ``held`` out, strongest first, each
    from the last solution, until ``params["patience"]`` Cs in a row score no better on
    validation than the best before them; return the solutions, their validation
    accuracies, the gradient tolerance every fit used, and the passes over the data:
    the one at zero weights that sets that tolerance, then each fit's. Where ``warm`` is
    given, each fit's first step is sized by the fit before it, and the last fit's is
    left there for the caller's refit."""
    path: dict[float, Solution] = {}
    val_accuracy: dict[float, float] = {}
    solution = None
    fit_x, fit_y, held_x = on_device(x[~held], y[~held], x[held])
    n_fit = len(fit_y)
    size = x.shape[1] * n_classes + n_classes
    data = CrossEntropy(fit_x, fit_y, n_classes)  # one for the path: warm starts are free
    zero_grad = data(flat(fit_x, None, size))[1]
    gtol = params["tol"] * float(abs(zero_grad).max())
    fit_passes: list[int] = [1]
    stale = 0
    for c in sorted(params["C"]):
        if bar is not None:
            bar.set_postfix_str(f"C={c:g}", refresh=False)
        decay = 1 / (c * n_fit)
        solution = fit_softmax(
            fit_x, fit_y, n_classes, decay, params["max_iter"], solution, gtol, fit_passes, bar,
            PATH_FTOL, data, warm,
        )  # fmt: skip
        path[c] = solution
        predicted = predict(held_x, solution)
        accuracy = float(metrics.correct(y[held], predicted).mean())
        stale = stale + 1 if val_accuracy and accuracy <= max(val_accuracy.values()) else 0
        val_accuracy[c] = accuracy
        if stale >= params["patience"]:
            break
    return path, val_accuracy, gtol, fit_passes


@strategy("linear", CLASSIFICATION, main_metric="accuracy", settings=LinearSettings)
def linear(data: Features, params: Mapping[str, Any]) -> Outcome:
    """A softmax linear probe (L-BFGS) on L2-normalised embeddings: scikit-learn's
    ``LogisticRegression(C)``, whose objective is mean cross-entropy + ‖W‖² / (2·C·n).

    C is chosen on a stratified validation split carved from train, walking the grid from
    strongest to weakest regularisation with warm starts (a regularisation path, as glmnet
    does) until ``patience`` Cs in a row score no better on validation; ties go to the
    stronger. The probe is then refit on all of train with that C,
    from the chosen solution. The test split is touched only for the final scores. Each
    fit runs until the largest gradient entry is below ``tol`` times its value at zero
    weights: a tolerance relative to the problem's own scale, since that gradient shrinks
    with the number of classes (about 1e-2 at 10 classes, 1e-6 at 9,691, where an
    absolute tolerance such as scikit-learn's stops before the first step); or until a
    step lowers the objective by less than ``FTOL`` of its value (``PATH_FTOL`` on the
    path, which only ranks the Cs). L-BFGS searches with the weights scaled against the
    bias (``balance``): on a tenth-size lookalike of Products-10K that took path and refit
    from 93 passes over the data to 50, the same C; and each fit's first step is sized by
    the fit before it (``lbfgs.Warm``): 36 passes against 44 (2026-12-05). On the default cell's
    embeddings it chooses what scikit-learn chooses on the same split, C = 10, and scores
    0.8840 (scikit-learn 0.8845) where scikit-learn took 60 s (2026-11-28); with torch's
    BLAS, a 100-step L-BFGS memory and numpy's BLAS threads kept off the cores torch
    computes on, it takes 2.8 s instead of 12 (2026-12-04).
    Where the cell runs bf16 on a CPU that multiplies bf16 faster, oneDNN computes the
    objective's products in bf16 arithmetic (``runtime.cpu_matmuls``): 1.5-1.9 s against
    4.2-4.5 in IEEE fp32 on a 2-vCPU AMD EPYC (avx512_bf16, no amx_bf16), the same C,
    accuracy within 0.001 (2026-12-05).
    """
    from harness.runtime import torch_computes

    with torch_computes():  # numpy only adds vectors here
        return _linear(data, params)


def _linear(data: Features, params: Mapping[str, Any]) -> Outcome:
    start = time.perf_counter()
    fitted = probe(data.train, data.train_labels, data.n_classes, params, head_precision(data))
    trained = time.perf_counter()
    test_scores = scores(l2_normalise(data.test), fitted.weight, fitted.bias)
    return Outcome(
        classification_items(data.test_labels, test_scores),
        {"fit": trained - start, "eval": time.perf_counter() - trained},
        fitted.chosen,
        trainable_params=fitted.weight.size + fitted.bias.size,
        train_gflops=fitted.gflops,
    )


def passes_bar(n_classes: int) -> tqdm:
    """Passes over the data, on stderr, shown once a probe has run 5 s (Products-10K's
    9,691 classes take minutes: a pass of 112,858 items took 9.3-9.5 s on a 2-vCPU AMD
    EPYC with avx512_bf16 and no amx_bf16, 2026-12-05); sparse (every 15 s) where stderr
    is not a terminal."""
    return progress_bar(f"linear probe, {n_classes:,} classes", "pass", quiet_for=5)


@dataclass(frozen=True)
class Probe:
    """A fitted probe: scores are ``l2_normalise(x) @ weight + bias``; what it chose, and
    its training FLOPs."""

    weight: np.ndarray
    bias: np.ndarray
    chosen: dict[str, Any]
    gflops: float


def probe(
    train: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    params: Mapping[str, Any],
    precision: str = "fp32",
) -> Probe:
    """The probe on ``train``'s embeddings: C chosen on the validation split, then refit
    on all of them from the chosen solution (the strategy's docstring says how). On the
    CPU at ``precision = "bf16"``, the objective's products run through oneDNN's bf16
    arithmetic (``runtime.cpu_matmuls``)."""
    from harness.runtime import cpu_matmuls, device

    precision = precision if device() == "cpu" else "fp32"
    x, y = l2_normalise(train), labels
    held = stratified_holdout(y, params["validation"], params["seed"])
    warm = lbfgs.Warm()
    with cpu_matmuls(precision), passes_bar(n_classes) as bar:
        path, val_accuracy, gtol, fit_passes = regularisation_path(
            x, y, held, n_classes, params, bar, warm
        )
        n_fit = int((~held).sum())
        best = max(val_accuracy, key=lambda c: (val_accuracy[c], -c))
        bar.set_postfix_str(f"refit at C={best:g}", refresh=False)
        refit_passes: list[int] = []
        decay = 1 / (best * len(y))
        all_x, all_y = on_device(x, y)
        w, b = host(
            fit_softmax(
                all_x,
                all_y,
                n_classes,
                decay,
                params["max_iter"],
                path[best],
                gtol,
                refit_passes,
                bar,
                warm=warm,
            )
        )
    chosen = {
        "C": best,
        "validation_accuracy": {str(c): a for c, a in val_accuracy.items()},
        "validation": params["validation"],
        "seed": params["seed"],
        "precision": precision,
    }
    # Each evaluation of the objective is one forward and backward pass (6 FLOPs per
    # weight per item) over the items it fits.
    items_passed = n_fit * sum(fit_passes) + len(x) * sum(refit_passes)
    gflops = 6 * w.size * items_passed / 1e9
    return Probe(w.astype(np.float32), b.astype(np.float32), chosen, gflops)
