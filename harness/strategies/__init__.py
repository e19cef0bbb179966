"""Strategies: each registers itself with the ``@strategy`` decorator on import."""

from harness.strategies import knn, linear, mlp, tuned, zeroshot
from harness.strategies.base import (
    STRATEGIES,
    Features,
    Outcome,
    StrategySpec,
    Tuning,
    parse_strategy,
    strategy,
)

__all__ = [
    "STRATEGIES",
    "Features",
    "Outcome",
    "StrategySpec",
    "Tuning",
    "knn",
    "linear",
    "mlp",
    "parse_strategy",
    "strategy",
    "tuned",
    "zeroshot",
]
