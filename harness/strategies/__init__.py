"""Strategies: each registers itself with the ``@strategy`` decorator on import."""

from harness.strategies import knn, linear, mlp, zeroshot
from harness.strategies.base import STRATEGIES, Features, Outcome, StrategySpec, strategy

__all__ = [
    "STRATEGIES",
    "Features",
    "Outcome",
    "StrategySpec",
    "knn",
    "linear",
    "mlp",
    "strategy",
    "zeroshot",
]
