"""The strategy layer's vocabulary: inputs, outcome, and a decorator registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from harness.errors import SuiteError
from harness.registry import Registry
from harness.settings import Table, load

Head = tuple[np.ndarray, np.ndarray]  # a linear head's weights (classes × width) and bias


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
    head: Head | None = None  # a fine-tuned classifier (W, b)
    protocol: str = "split"
    train_ids: np.ndarray | None = None
    test_ids: np.ndarray | None = None
    test_query: np.ndarray | None = None
    tuner: Tuner | None = None  # fine-tunes the backbone on request (images, not vectors)
    precision: str = "fp32"  # the cell's (runtime.resolve_precision): fp32, bf16 or tf32

    def __post_init__(self) -> None:
        for name in ("train_labels", "test_labels", "train_ids", "test_ids"):
            codes = getattr(self, name)
            if codes is not None and codes.dtype != np.int64:
                raise TypeError(
                    f"Features.{name} is {codes.dtype}; strategies read int64 codes, which "
                    "a Dataset hands out (harness.datasets.base.codes_of)"
                )


def head_precision(data: Features) -> str:
    """What a head on cached embeddings trains at: bf16 where the cell runs bf16 and this
    CPU multiplies bf16 faster (``runtime.cpu_has_bf16``), else fp32 (heads train on the
    CPU, whatever device embedded)."""
    from harness.runtime import cpu_has_bf16

    return "bf16" if data.precision == "bf16" and cpu_has_bf16() else "fp32"


class Tuner(Protocol):
    """Fine-tuning on request, for a strategy that decides as it goes (``adaptive``): a
    run of ``rung`` (``finetune``, ``partial:N``) on the train items not ``held`` out
    (a mask over ``Features.train``), which logs its accuracy on the held-out ones each
    epoch, its head starting from ``head`` (weights, bias) where given."""

    def step_seconds(self, rung: str, held: np.ndarray) -> tuple[float, float]:
        """Seconds per image of a training step and of a validation pass, timed."""
        ...

    def advance(
        self, rung: str, held: np.ndarray, until: int | None, head: Head | None = None
    ) -> dict[str, Any]:
        """Train to epoch ``until`` (None: the last), resuming; the run's state so far."""
        ...

    def features(self, rung: str, held: np.ndarray, head: Head | None = None) -> Features:
        """The finished run's embeddings of train and test, with its head."""
        ...


@dataclass
class Outcome:
    """What a strategy measured: per-test-item results (see ``harness.stats``), phase
    timings, and the settings it chose. ``metrics`` are the items summarised."""

    items: dict[str, np.ndarray]
    seconds: dict[str, float]
    chosen: dict[str, Any] = field(default_factory=dict)
    trainable_params: int = 0
    train_gflops: float = 0.0
    reference: dict[str, np.ndarray] | None = None  # the same items under exact search
    index: dict[str, Any] | None = None  # the approximate index searched, and its costs

    @property
    def metrics(self) -> dict[str, float]:
        from harness.stats import summarise

        return summarise(self.items)


Run = Callable[[Features, Mapping[str, Any]], Outcome]
# A strategy's parameters → one (label, parameters) per cell they ask for ("" keeps the id);
# the second argument names the suite table they came from, for messages.
Variants = Callable[[Mapping[str, Any], str], list[tuple[str, dict[str, Any]]]]


@dataclass(frozen=True)
class Tuning:
    """How a strategy trains the backbone before embedding: the last ``blocks`` blocks
    (None: all of them), on ``dataset`` (None: the cell's own)."""

    blocks: int | None = None
    dataset: str | None = None

    @property
    def own_head(self) -> bool:
        """Whether the head trained with the backbone classifies the cell's own classes
        (not when the backbone was tuned on another dataset)."""
        return self.dataset is None


@dataclass(frozen=True)
class StrategySpec:
    name: str
    run: Run = field(repr=False)
    families: tuple[str, ...]
    main_metric: str
    settings: type[Table]
    description: str
    needs_text: bool = False
    tuning: Callable[[str], Tuning] | None = None
    argument: str = ""
    inherits: str = ""
    splits: tuple[str, ...] = ("train", "test")
    variants: Variants | None = None
    labels_from: str = "train"  # train | gallery | none: whose labels it compares test with
    from_gate: tuple[str, ...] = ()  # settings that default to the suite's [gate] values

    def learns(self, protocol: str) -> bool:
        """Whether it compares test items with train labels under ``protocol``: then a test
        class with no train item can never be right."""
        from harness.datasets.base import gallery_split

        if self.labels_from == "gallery":
            return gallery_split(protocol) == "train"
        return self.labels_from == "train"

    def cells(self, params: Mapping[str, Any], where: str = "") -> list[tuple[str, dict[str, Any]]]:
        """The variants ``params`` ask for: (label, parameters), one cell each; ``where``
        names the suite table they came from, for messages."""
        where = where or f"[strategy.{self.name}]"
        return self.variants(params, where) if self.variants else [("", dict(params))]

    @property
    def metrics(self) -> tuple[str, ...]:
        """The registered metrics this strategy reports, in display order."""
        from harness.metrics import in_families

        return in_families(self.families)

    @property
    def defaults(self) -> dict[str, Any]:
        return self.settings().model_dump()

    def params(self, overrides: Mapping[str, Any] | None = None, where: str = "") -> dict[str, Any]:
        """The defaults with a suite's ``[strategy.NAME]`` overrides, each checked against
        its declared kind and range (``where`` names the table in a message)."""
        where = where or f"[strategy.{self.name}]"
        return load(self.settings, overrides or {}, where).model_dump()


# Metric families (``harness.metrics.FAMILIES``): a strategy reports every registered
# metric of the families it declares.
CLASSIFICATION = ("classification",)
RETRIEVAL = ("retrieval",)

STRATEGIES: Registry[StrategySpec] = Registry("strategy", SuiteError)


def strategy(
    name: str,
    families: tuple[str, ...],
    main_metric: str,
    settings: type[Table],
    needs_text: bool = False,
    tuning: Callable[[str], Tuning] | None = None,
    argument: str = "",
    inherits: str = "",
    splits: tuple[str, ...] = ("train", "test"),
    variants: Variants | None = None,
    labels_from: str = "train",
    from_gate: tuple[str, ...] = (),
) -> Callable[[Run], Run]:
    """Register ``run`` as a strategy that reports the metrics of ``families``
    (classification, retrieval); its docstring's first line is its description and
    ``settings`` declares its parameters (kind, range, default: ``harness.settings``).

    ``needs_text``: it uses the backbone's text tower (``Features.encode_text``), so only
    text-image models run it. ``tuning``: it fine-tunes the backbone first, as the
    ``Tuning`` made from the cell's ``name:argument`` (``argument`` names it, e.g. ``N``).
    ``inherits``: a suite's parameters for that strategy apply to this one too.
    ``splits``: the splits it reads; a cell embeds no other. ``variants``: how its
    parameters expand into several cells (knn: one per index setting). ``labels_from``:
    whose labels it compares test items with: ``train`` (a head, a probe), ``gallery``
    (retrieval and a vote among the gallery's items), ``none`` (zero-shot). ``from_gate``:
    settings that, left unset (None), take the suite's ``[gate]`` value of that name.
    """

    def register(run: Run) -> Run:
        doc = (run.__doc__ or "").strip().splitlines()
        description = doc[0] if doc else ""
        STRATEGIES.add(
            StrategySpec(
                name,
                run,
                families,
                main_metric,
                settings,
                description,
                needs_text,
                tuning,
                argument,
                inherits,
                splits,
                variants,
                labels_from,
                from_gate,
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
