"""The strategy layer's vocabulary: inputs, outcome, and a decorator registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.errors import SuiteError
from harness.registry import Registry


@dataclass(frozen=True)
class Features:
    """Embeddings of the train and test items, with labels, and how retrieval runs on them:
    the dataset's ``protocol`` (``harness.datasets.base.PROTOCOLS``), relevance ``*_ids``
    where they are not the labels, and which test items are queries (query-gallery)."""

    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    n_classes: int
    class_names: tuple[str, ...] = ()
    encode_text: Callable[[list[str]], np.ndarray] | None = None
    head: tuple[np.ndarray, np.ndarray] | None = None  # a fine-tuned classifier (W, b)
    protocol: str = "split"
    train_ids: np.ndarray | None = None
    test_ids: np.ndarray | None = None
    test_query: np.ndarray | None = None


@dataclass
class Outcome:
    """What a strategy measured: per-test-item results (see ``harness.stats``), phase
    timings, and the settings it chose. ``metrics`` are the items summarised."""

    items: dict[str, np.ndarray]
    seconds: dict[str, float]
    chosen: dict[str, Any] = field(default_factory=dict)
    trainable_params: int = 0
    train_gflops: float = 0.0

    @property
    def metrics(self) -> dict[str, float]:
        from harness.stats import summarise

        return summarise(self.items)


Run = Callable[[Features, Mapping[str, Any]], Outcome]


@dataclass(frozen=True)
class Tuning:
    """How a strategy trains the backbone before embedding: the last ``blocks`` blocks
    (None: all of them), on ``dataset`` (None: the cell's own)."""

    blocks: int | None = None
    dataset: str | None = None


@dataclass(frozen=True)
class StrategySpec:
    name: str
    run: Run = field(repr=False)
    metrics: tuple[str, ...]
    main_metric: str
    defaults: Mapping[str, Any]
    description: str
    needs_text: bool = False
    tuning: Callable[[str], Tuning] | None = None
    argument: str = ""
    inherits: str = ""

    def params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise SuiteError(
                f"strategy {self.name!r} has no parameter {sorted(unknown)}; "
                f"it takes {sorted(self.defaults)}"
            )
        return {**self.defaults, **overrides}


CLASSIFICATION = ("accuracy", "top5_accuracy", "macro_f1")
RETRIEVAL = ("recall@1", "recall@5", "mmp@5", "map@r", "mrr@10", "ndcg@10")

STRATEGIES: Registry[StrategySpec] = Registry("strategy", SuiteError)


def strategy(
    name: str,
    metrics: tuple[str, ...],
    main_metric: str,
    needs_text: bool = False,
    tuning: Callable[[str], Tuning] | None = None,
    argument: str = "",
    inherits: str = "",
    **defaults: Any,
) -> Callable[[Run], Run]:
    """Register ``run`` as a strategy that reports ``metrics``; its docstring's first line
    is its description and ``defaults`` are its parameters.

    ``needs_text``: it uses the backbone's text tower (``Features.encode_text``), so only
    text-image models run it. ``tuning``: it fine-tunes the backbone first, as the
    ``Tuning`` made from the cell's ``name:argument`` (``argument`` names it, e.g. ``N``).
    ``inherits``: a suite's parameters for that strategy apply to this one too.
    """

    def register(run: Run) -> Run:
        doc = (run.__doc__ or "").strip().splitlines()
        description = doc[0] if doc else ""
        STRATEGIES.add(
            StrategySpec(
                name,
                run,
                metrics,
                main_metric,
                defaults,
                description,
                needs_text,
                tuning,
                argument,
                inherits,
            )
        )
        return run

    return register


def parse_strategy(text: str) -> tuple[StrategySpec, Tuning | None]:
    """A cell's strategy, ``name`` or ``name:argument`` (``partial:2``, ``cross:sop``), and
    the backbone tuning it asks for."""
    name, colon, argument = text.partition(":")
    spec = STRATEGIES.get(name)
    if spec.tuning is None or not spec.argument:
        if colon:
            raise SuiteError(f"strategy {name!r} takes no argument; write {name!r}")
        return spec, spec.tuning("") if spec.tuning else None
    if not argument:
        raise SuiteError(f"strategy {name!r} needs an argument: {name}:{spec.argument}")
    return spec, spec.tuning(argument)
