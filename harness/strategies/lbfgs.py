"""A small L-BFGS minimiser in numpy, for the convex heads of top-tuning.

Neither scipy's nor torch's: scipy's L-BFGS-B ran 2-3x slower here because its BLAS thread
pool fought numpy's, and ``torch.optim`` imports torch._dynamo (2.4 s) on first use, which
would dominate a warm-cache run of a suite.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


def minimize(
    fun: Objective, x0: np.ndarray, max_iter: int, history: int = 10, gtol: float = 1e-6
) -> np.ndarray:
    """Minimise a smooth ``fun`` (returning value and gradient) from ``x0``.

    Search directions come from the two-loop recursion over the last ``history`` steps
    (Nocedal & Wright, Algorithm 7.4), step lengths from Armijo backtracking from 1. Stops
    after ``max_iter`` iterations, when the largest gradient entry is below ``gtol`` (as
    scipy's L-BFGS-B ``pgtol``, which scikit-learn sets to its ``tol``), or when no step
    along the direction decreases ``fun`` (the objective's rounding is reached).
    """
    x = x0.astype(np.float64)
    f, g = fun(x)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(max_iter):
        if np.abs(g).max() < gtol:
            break
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(steps):
            alpha = rho * (s @ q)
            q -= alpha * y
            alphas.append(alpha)
        if steps:
            s, y, _ = steps[-1]
            q *= (s @ y) / (y @ y)
        else:
            q /= max(1.0, np.linalg.norm(g))
        for (s, y, rho), alpha in zip(steps, reversed(alphas), strict=True):
            q += s * (alpha - rho * (y @ q))
        direction = -q
        slope = g @ direction
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
        if s @ y > 1e-12:
            steps = [*steps[-(history - 1) :], (s, y, 1.0 / (s @ y))]
        x, f, g = x_new, f_new, g_new
    return x
