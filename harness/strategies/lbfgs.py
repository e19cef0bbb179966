"""A small L-BFGS minimiser for the convex heads of top-tuning, on numpy arrays or, where
the features sit on a GPU, torch tensors on that device (the same code: it uses only
``@``, arithmetic, ``abs`` and ``max``).

Neither scipy's nor torch's: scipy's L-BFGS-B ran 2-3x slower here because its BLAS thread
pool fought numpy's, and ``torch.optim`` imports torch._dynamo (2.4 s) on first use, which
would dominate a warm-cache run of a suite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Array = Any  # a float64 numpy array or torch tensor
Objective = Callable[[Array], tuple[float, Array]]


def minimize(
    fun: Objective, x0: Array, max_iter: int, history: int = 10, gtol: float = 1e-6
) -> Array:
    """Minimise a smooth ``fun`` (returning value and gradient) from ``x0`` (float64).

    Search directions come from the two-loop recursion over the last ``history`` steps
    (Nocedal & Wright, Algorithm 7.4), step lengths from Armijo backtracking from 1. Stops
    after ``max_iter`` iterations, when the largest gradient entry is below ``gtol`` (as
    scipy's L-BFGS-B ``pgtol``, which scikit-learn sets to its ``tol``), or when no step
    along the direction decreases ``fun`` (the objective's rounding is reached).
    """
    x = x0
    f, g = fun(x)
    steps: list[tuple[Array, Array, float]] = []
    for _ in range(max_iter):
        if float(abs(g).max()) < gtol:
            break
        q = 1.0 * g
        alphas = []
        for s, y, rho in reversed(steps):
            alpha = rho * float(s @ q)
            q -= alpha * y
            alphas.append(alpha)
        if steps:
            s, y, _ = steps[-1]
            q *= float(s @ y) / float(y @ y)
        else:
            q /= max(1.0, float(g @ g) ** 0.5)
        for (s, y, rho), alpha in zip(steps, reversed(alphas), strict=True):
            q += s * (alpha - rho * float(y @ q))
        direction = -q
        slope = float(g @ direction)
        step = 1.0
        while True:
            x_new = x + step * direction
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
            if step < 1e-10:
                return x
        s, y = x_new - x, g_new - g
        curvature = float(s @ y)
        if curvature > 1e-12:
            steps = [*steps[-(history - 1) :], (s, y, 1.0 / curvature)]
        x, f, g = x_new, f_new, g_new
    return x
