"""Strategies: each module of this package registers its own with the ``@strategy``
decorator when the package is imported, so a new strategy is one new module here."""

import importlib
import pkgutil

from harness.strategies.base import (
    STRATEGIES,
    Features,
    Outcome,
    StrategySpec,
    Tuning,
    parse_strategy,
    strategy,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "STRATEGIES",
    "Features",
    "Outcome",
    "StrategySpec",
    "Tuning",
    "parse_strategy",
    "strategy",
]
