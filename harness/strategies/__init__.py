"""Strategies: each module of this package registers its own with the ``@strategy``
decorator when the package is imported, so a new strategy is one new module here."""

from harness.registry import import_modules
from harness.strategies.base import (
    STRATEGIES,
    Features,
    Outcome,
    StrategySpec,
    Tuning,
    parse_strategy,
    strategy,
)

import_modules(__name__, __path__)
STRATEGIES.freeze()

__all__ = [
    "STRATEGIES",
    "Features",
    "Outcome",
    "StrategySpec",
    "Tuning",
    "parse_strategy",
    "strategy",
]
