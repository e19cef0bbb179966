"""The adaptive strategy: spend fine-tuning compute only where the data says it pays
(the policy is ``harness.adaptive``; this module runs its rungs on a cell)."""

from __future__ import annotations

import dataclasses
import time
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any

import numpy as np
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from harness.adaptive import SIGNALS, Path, Policy, Prior, Trained, climb, fine_tunes
from harness.search import l2_normalise
from harness.settings import RULE, Count, Names, Share, Tolerance
from harness.strategies.base import (
    CLASSIFICATION,
    RETRIEVAL,
    STRATEGIES,
    Features,
    Head,
    Outcome,
    head_precision,
    strategy,
)
from harness.strategies.knn import retrieval
from harness.strategies.linear import LinearSettings, Probe, probe, scores, stratified_holdout
from harness.strategies.tuned import evaluate_tuned
from harness.training import TrainSettings

RUNGS = ("knn", "zeroshot", "linear", "mlp", "partial", "finetune")
# Rows an MLP epoch is timed on to estimate the mlp rung's cost.
MLP_PROBE_ROWS = 2048


def priors() -> dict[str, Prior]:
    """The priors ``benchmarks/adaptive.py --fit`` measured (``adaptive_priors.toml``)."""
    text = resources.files("harness.strategies").joinpath("adaptive_priors.toml").read_text()
    return {rung: Prior(**values) for rung, values in tomllib.loads(text)["priors"].items()}


class AdaptiveSettings(TrainSettings):
    """``[strategy.adaptive]``: the ladder, the validation split, ε (unset: the suite's
    ``[gate] epsilon``), the budget as a multiple of the whole ladder's estimated cost
    (above 1: room for estimates that fall short, so no budget decision binds), the one-sided
    confidence of its bounds and the pilot's epochs; fine-tuning rungs train with the
    suite's ``[strategy.finetune]`` settings (the rest of this table)."""

    ladder: Names = ("knn", "zeroshot", "linear", "mlp", "partial:2", "finetune")
    validation: Share = 0.2
    epsilon: Tolerance | None = None  # None: the suite's [gate] epsilon
    budget: Annotated[float, Field(gt=0, le=10)] = 0.3  # × the whole ladder's estimated cost
    confidence: Annotated[float, Field(ge=0.5, lt=1)] = 0.9
    pilot_epochs: Count = 1

    @field_validator("ladder")
    @classmethod
    def _ladder(cls, ladder: tuple[str, ...]) -> tuple[str, ...]:
        names = [rung.partition(":")[0] for rung in ladder]
        for rung, name in zip(ladder, names, strict=True):
            if name not in RUNGS:
                raise PydanticCustomError(
                    RULE, f"{rung!r} is no rung; rungs are {', '.join(RUNGS)}"
                )
            if (name == "partial") != rung.startswith("partial:") or rung == "partial:0":
                raise PydanticCustomError(
                    RULE, f"{rung!r}: write partial:N (N ≥ 1 blocks) or a plain rung"
                )
            if name == "partial" and not rung[8:].isdigit():
                raise PydanticCustomError(
                    RULE, f"{rung!r}: N in partial:N is a whole number of blocks"
                )
            if name != "partial" and ":" in rung:
                raise PydanticCustomError(RULE, f"{rung!r}: only partial takes an argument")
        if names != sorted(names, key=RUNGS.index):
            raise PydanticCustomError(RULE, f"rungs climb in cost order: {', '.join(RUNGS)}")
        if not any(n in SIGNALS for n in names):
            raise PydanticCustomError(
                RULE, "the ladder needs knn, zeroshot or linear to judge the rest by"
            )
        return ladder


@strategy(
    "adaptive",
    CLASSIFICATION + RETRIEVAL,
    main_metric="accuracy",
    settings=AdaptiveSettings,
    inherits="finetune",
    from_gate=("epsilon",),
)
def adaptive(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Climbs knn → zero-shot → linear → mlp → partial:N → finetune on a validation split.

    Every rung is judged by its accuracy on a seeded, stratified ``validation`` share of
    train after training on the rest; kNN, zero-shot (text-image backbones) and linear
    always run. A costlier rung trains only while the upper confidence bound of its gain
    over the best so far exceeds ε (the suite's recommendation tolerance): a prior fitted
    on logged runs bounds the gain before it trains, and a fine-tuning rung is piloted for
    ``pilot_epochs``, extrapolated, and resumed from its checkpoint only if still worth it,
    all within ``budget`` (a share of the exhaustive ladder's estimated cost). It picks
    the cheapest rung within ε of the best on validation, and only that rung reads test.
    Rungs run with their default settings; fine-tuning rungs start from the linear rung's
    probe (LP-FT). Retrieval uses the picked rung's embeddings (frozen for knn, zero-shot
    and linear).
    """
    start = time.perf_counter()
    ladder = [r for r in params["ladder"] if r != "zeroshot" or data.encode_text is not None]
    if any(fine_tunes(r) for r in ladder) and data.tuner is None:
        ladder = [r for r in ladder if not fine_tunes(r)]  # vectors: no images to tune
    held = stratified_holdout(data.train_labels, params["validation"], params["seed"])
    rungs = Live(data, params, held)
    policy = Policy(
        params["epsilon"], params["budget"], params["confidence"], params["pilot_epochs"], priors()
    )
    path = climb(ladder, rungs, policy)
    decided = time.perf_counter()
    outcome = rungs.on_test(path.picked)
    items = outcome.items
    if "top5" not in items:  # a probe or zero-shot pick: retrieval on the frozen embeddings
        items = {**items, **retrieval(data, data.train, data.test, 10).items}
    chosen = {
        "picked": path.picked,
        "path": [dataclasses.asdict(step) for step in path.steps],
        "spent_seconds": path.spent,
        "budget_seconds": path.budget,
        "exhaustive_seconds": path.exhaustive,
        "validation": {"share": params["validation"], "items": int(held.sum())},
        "epsilon": params["epsilon"],
        "signals": rungs.signals(path),
        "picked_chose": outcome.chosen,
    }
    return Outcome(
        items,
        {"fit": decided - start + outcome.seconds.get("fit", 0.0), "eval": outcome.seconds["eval"]},
        chosen,
        outcome.trainable_params,
        outcome.train_gflops,
    )


class Live:
    """The rungs of one cell: each trained on the train items not ``held`` out and judged
    on those that are."""

    def __init__(self, data: Features, params: Mapping[str, Any], held: np.ndarray) -> None:
        self.data, self.params, self.held = data, params, held
        self.n_validation = int(held.sum())
        self.view = Features(
            data.train[~held],
            data.train_labels[~held],
            data.train[held],
            data.train_labels[held],
            data.n_classes,
            data.class_names,
            data.encode_text,
            precision=data.precision,  # the mlp rung trains its head as the mlp cell does
        )
        self.charged: dict[str, int] = {}  # epochs of each fine-tuning rung already spent
        self.head: Head | None = None  # the linear rung's probe, as a fine-tuning head

    def lp_ft(self, fitted: Probe) -> Head:
        """The probe as the head of a fine-tuning run (LP-FT, Kumar et al. 2022): the probe
        scores L2-normalised embeddings, the head raw ones, so its weights are divided by
        the fit items' mean embedding norm."""
        scale = float(np.linalg.norm(self.view.train, axis=1).mean())
        return np.ascontiguousarray(fitted.weight.T / scale), fitted.bias.copy()

    def epochs(self, rung: str) -> int:
        return int(self.params["epochs"]) if fine_tunes(rung) else 1

    def estimate(self, rung: str) -> float:
        """Seconds to train and validate ``rung`` in full: fine-tuning from a few timed
        steps, the MLP search from one timed epoch."""
        n_fit = int((~self.held).sum())
        if fine_tunes(rung):
            assert self.data.tuner is not None  # fine-tuning rungs need images
            step, forward = self.data.tuner.step_seconds(rung, self.held)
            return self.epochs(rung) * (step * n_fit + forward * self.n_validation)
        if rung == "mlp":
            return mlp_seconds(self.view, STRATEGIES.get("mlp").defaults)
        return 0.0  # signals are measured, not estimated

    def train(self, rung: str, until: int | None) -> Trained:
        if rung == "linear":
            start = time.perf_counter()
            view = self.view
            fitted = probe(
                view.train,
                view.train_labels,
                view.n_classes,
                LinearSettings().model_dump(),
                head_precision(view),
            )
            test_scores = scores(l2_normalise(view.test), fitted.weight, fitted.bias)
            predicted = np.argmax(test_scores, axis=1)
            self.head = self.lp_ft(fitted)
            accuracy = float((predicted == view.test_labels).mean())
            return Trained(accuracy, time.perf_counter() - start)
        if not fine_tunes(rung):
            spec = STRATEGIES.get(rung)
            outcome = spec.run(self.view, spec.defaults)
            accuracy = float(outcome.metrics["accuracy"])
            return Trained(accuracy, sum(outcome.seconds.values()))
        assert self.data.tuner is not None
        state = self.data.tuner.advance(rung, self.held, until, self.head)
        history = state["history"][: until or len(state["history"])]
        earlier = self.charged.get(rung, 0)
        self.charged[rung] = len(history)
        seconds = sum(state["epoch_seconds"][earlier : len(history)])
        curve = tuple(float(h["validation_accuracy"]) for h in history)
        return Trained(curve[-1], seconds, curve)

    def on_test(self, rung: str) -> Outcome:
        """The picked rung on test: knn, zero-shot, linear and mlp as their own cells run
        (on all of train); a fine-tuning rung with the backbone it trained here."""
        if fine_tunes(rung):
            assert self.data.tuner is not None
            return evaluate_tuned(self.data.tuner.features(rung, self.held, self.head), {})
        spec = STRATEGIES.get(rung)
        return spec.run(self.data, spec.defaults)

    def signals(self, path: Path) -> dict[str, Any]:
        """What the climb saw besides the rungs' accuracies: the linear − kNN gap, the
        dataset's facts."""
        counts = np.bincount(self.data.train_labels, minlength=self.data.n_classes)
        gap = None
        if "linear" in path.accuracy and "knn" in path.accuracy:
            gap = path.accuracy["linear"] - path.accuracy["knn"]
        return {
            "linear_minus_knn": gap,
            "items": len(self.data.train_labels),
            "classes": self.data.n_classes,
            "images_per_class": float(counts[counts > 0].mean()) if counts.any() else 0.0,
        }


def mlp_seconds(data: Features, params: Mapping[str, Any]) -> float:
    """The MLP search's seconds, from one epoch of a middle configuration on up to
    ``MLP_PROBE_ROWS`` rows, trained as the search trains it (``mlp.Trial``), scaled to
    the most epochs its successive halving trains."""
    import torch

    from harness.runtime import cpu_training, torch_computes
    from harness.strategies.mlp import Trial, trial_epochs

    rows = min(len(data.train), MLP_PROBE_ROWS)
    x = torch.from_numpy(np.ascontiguousarray(data.train[:rows], dtype=np.float32))
    y = torch.from_numpy(data.train_labels[:rows])
    config = {
        "lr": params["lr"][0],
        "weight_decay": params["weight_decay"][0],
        "depth": sorted(params["depth"])[len(params["depth"]) // 2],
        "width": sorted(params["width"])[len(params["width"]) // 2],
    }
    # validated on one row: the search's validation pass is not what an epoch costs
    trial = Trial(config, (x, y, x[:1], y[:1]), data.n_classes, params, head_precision(data))
    with cpu_training(), torch_computes():
        start = time.perf_counter()
        trial.train(1)
        seconds = time.perf_counter() - start
    per_row = seconds / rows
    epochs = trial_epochs(params["trials"], params["halving"], params["search_epochs"])
    return per_row * len(data.train) * epochs
