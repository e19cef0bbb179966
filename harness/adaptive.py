"""The adaptive strategy's policy: climb a cost-ordered ladder of rungs (knn, zero-shot,
linear, mlp, partial:N, finetune), each judged on one validation split, training a rung
only while the upper confidence bound of its gain over the best so far exceeds ε, within
a compute budget; then pick the cheapest rung within ε of the best.

The policy reads rungs through ``Rungs``: the live strategy
(``harness.strategies.adaptive``) trains them, the benchmark (``benchmarks/adaptive.py``)
replays an exhaustive run's logs, and both take the same path on the same numbers.

Gains are predicted as shares of an error (scale-free, so one prior serves a 0.6 and a
0.95 task): a rung removes a share ``gain`` of the linear probe's validation error, and a
fine-tuning rung's remaining epochs remove a share ``rest`` of its pilot's. Each share
has a mean and a standard deviation fitted on logged runs (``fit_priors``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

# Rungs that always run: they are cheap, and they are the signals the others are judged by.
SIGNALS = ("knn", "zeroshot", "linear")


def fine_tunes(rung: str) -> bool:
    """Whether the rung trains the backbone (and so is piloted, then resumed)."""
    return rung == "finetune" or rung.startswith("partial:")


@dataclass(frozen=True)
class Prior:
    """A rung's gain as a share of the linear probe's validation error (mean, standard
    deviation over ``pairs`` logged dataset × backbone pairs), and for a fine-tuning rung
    the share of its pilot's validation error its remaining epochs remove (``rest``)."""

    gain: float
    gain_sd: float
    rest: float = 0.0
    rest_sd: float = 0.0
    pairs: int = 0


@dataclass(frozen=True)
class Trained:
    """A rung trained as far as asked: validation accuracy at its last epoch, the seconds
    this call spent, and the validation accuracy per epoch (fine-tuning rungs)."""

    accuracy: float
    seconds: float
    curve: tuple[float, ...] = ()


class Rungs(Protocol):
    """What the policy reads: each rung's estimated full cost, its epochs, and training
    (to epoch ``until``, None: to its end, resuming a pilot)."""

    @property
    def n_validation(self) -> int: ...

    def estimate(self, rung: str) -> float: ...

    def epochs(self, rung: str) -> int: ...

    def train(self, rung: str, until: int | None) -> Trained: ...


@dataclass(frozen=True)
class Step:
    """What the climb did at a rung: ``action`` ran, piloted, resumed or skipped, and why;
    seconds spent, the validation accuracy reached with its 95% interval, the predicted
    gain over the best so far (point and upper bound) and the observed one."""

    rung: str
    action: str
    reason: str
    seconds: float = 0.0
    accuracy: float | None = None
    interval: tuple[float, float] | None = None
    predicted_gain: float | None = None
    upper_gain: float | None = None
    gain: float | None = None


@dataclass(frozen=True)
class Path:
    """The climb: its steps, the rung picked, seconds spent against the budget and the
    exhaustive ladder's estimated cost, and each finished rung's validation accuracy."""

    steps: tuple[Step, ...]
    picked: str
    spent: float
    budget: float
    exhaustive: float
    accuracy: dict[str, float]


@dataclass(frozen=True)
class Policy:
    """The climb's settings: ε (the suite's recommendation tolerance), the budget as a
    share of the exhaustive ladder's cost, the one-sided confidence of the upper bounds,
    the epochs a fine-tuning rung is piloted for, and the priors by rung."""

    epsilon: float
    budget: float
    confidence: float
    pilot_epochs: int
    priors: Mapping[str, Prior]

    @property
    def z(self) -> float:
        return NormalDist().inv_cdf(self.confidence)


def interval(accuracy: float, n: int) -> tuple[float, float]:
    """The 95% (Wilson) interval of a validation accuracy over ``n`` items."""
    if n == 0:
        return (0.0, 1.0)
    z = 1.959963984540054
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def upper_bound(base: float, share: float, share_sd: float, z: float) -> float:
    """The upper confidence bound of an accuracy predicted as ``base`` plus a share of its
    error. The share's spread was fitted on validation accuracies, so it holds their
    sampling noise as well as the spread between tasks."""
    return base + (share + z * share_sd) * (1 - base)


@dataclass
class Climb:
    """A climb in progress: the steps so far, seconds spent, finished rungs' accuracies."""

    n_validation: int
    steps: list[Step]
    done: dict[str, float]
    spent: float = 0.0

    @property
    def best(self) -> float:
        return max(self.done.values(), default=0.0)

    def trained(self, rung: str, action: str, reason: str, trained: Trained,
                predicted: float | None = None, upper: float | None = None,
                best: float | None = None) -> None:  # fmt: skip
        """Record a training step: its seconds, accuracy and interval, and gains."""
        self.spent += trained.seconds
        acc = trained.accuracy
        gain = None if best is None else acc - best
        iv = interval(acc, self.n_validation)
        self.steps.append(
            Step(rung, action, reason, trained.seconds, acc, iv, predicted, upper, gain)
        )


def climb(ladder: Sequence[str], rungs: Rungs, policy: Policy) -> Path:
    """Run the signal rungs, then climb the rest of ``ladder`` (cost-ordered) as the module
    says; a rung without a prior may gain anything (its upper bound is 1)."""
    n_val, eps, z = rungs.n_validation, policy.epsilon, policy.z
    state = Climb(n_val, [], {})
    for rung in (r for r in ladder if r in SIGNALS):
        trained = rungs.train(rung, None)
        state.trained(rung, "ran", "a signal: always run", trained)
        state.done[rung] = trained.accuracy
    rest = [r for r in ladder if r not in SIGNALS]
    estimates = {r: rungs.estimate(r) for r in rest}  # once: an estimate may be a timing
    exhaustive = state.spent + sum(estimates.values())
    budget = policy.budget * exhaustive * (1 + 1e-9)  # a whole-ladder budget fits, rounded
    base = state.done.get("linear", state.best)
    for rung in rest:
        best, prior = state.best, policy.priors.get(rung)
        predicted, upper = None, 1.0 - best
        if prior is not None:
            predicted = base + prior.gain * (1 - base) - best
            upper = upper_bound(base, prior.gain, prior.gain_sd, z) - best
        if upper <= eps:
            why = f"upper bound of {rung}'s gain {upper:.3f} ≤ ε {eps:g}"
            state.steps.append(
                Step(rung, "skipped", why, predicted_gain=predicted, upper_gain=upper)
            )
            continue
        epochs = rungs.epochs(rung)
        pilot = policy.pilot_epochs if fine_tunes(rung) and epochs > policy.pilot_epochs else 0
        cost = estimates[rung] * (pilot / epochs if pilot else 1.0)
        if state.spent + cost > budget:  # a later rung's pilot may still fit
            why = f"budget: {cost:.0f} s more would pass {budget:.0f} s ({state.spent:.0f} s spent)"
            state.steps.append(
                Step(rung, "skipped", why, predicted_gain=predicted, upper_gain=upper)
            )
            continue
        if not pilot:
            trained = rungs.train(rung, None)
            state.trained(rung, "ran", f"upper bound of its gain {upper:.3f} > ε {eps:g}",
                          trained, predicted, upper, best)  # fmt: skip
            state.done[rung] = trained.accuracy
            continue
        trained = rungs.train(rung, pilot)
        acc = trained.accuracy
        # Without a prior, the remaining epochs may remove any share of the pilot's error.
        share, share_sd = (prior.rest, prior.rest_sd) if prior else (0.0, 1.0)
        predicted = acc + share * (1 - acc) - best
        upper = upper_bound(acc, share, share_sd, z) - best
        more = trained.seconds * (epochs - pilot) / pilot
        where = f"after {pilot} of {epochs} epochs"
        if upper <= eps:
            why = f"stopped {where}: upper bound of its gain {upper:.3f} ≤ ε {eps:g}"
        elif state.spent + trained.seconds + more > budget:
            why = f"stopped {where}: budget: resuming needs {more:.0f} s more of {budget:.0f} s"
        else:
            why = f"{where}: upper bound of its gain {upper:.3f} > ε {eps:g}; resumed"
        state.trained(rung, "piloted", why, trained, predicted, upper, best)
        if why.startswith("stopped"):
            continue
        trained = rungs.train(rung, None)
        state.trained(rung, "resumed", f"to epoch {epochs}", trained, predicted, upper, best)
        state.done[rung] = trained.accuracy
    top = state.best
    picked = next(r for r in ladder if r in state.done and state.done[r] >= top - eps)
    return Path(tuple(state.steps), picked, state.spent, budget, exhaustive, state.done)


def fit_priors(logs: Sequence[Mapping[str, object]]) -> dict[str, Prior]:
    """Priors from exhaustive runs' logs: each log maps ``validation`` to every rung's
    final validation accuracy and ``curves`` to each fine-tuning rung's per-epoch ones;
    ``pilot`` is the epoch the rest is measured from."""
    shares: dict[str, list[float]] = {}
    rests: dict[str, list[float]] = {}
    for log in logs:
        val: Mapping[str, float] = log["validation"]  # type: ignore[assignment]
        base = val["linear"]
        for rung, acc in val.items():
            if rung not in SIGNALS and base < 1:
                shares.setdefault(rung, []).append((acc - base) / (1 - base))
        curves: Mapping[str, Sequence[float]] = log.get("curves", {})  # type: ignore[assignment]
        pilot = int(log.get("pilot", 1))  # type: ignore[call-overload]
        for rung, curve in curves.items():
            if len(curve) > pilot and curve[pilot - 1] < 1:
                start = curve[pilot - 1]
                rests.setdefault(rung, []).append((curve[-1] - start) / (1 - start))
    return {
        rung: Prior(*mean_sd(values), *mean_sd(rests.get(rung, [])), len(values))
        for rung, values in shares.items()
    }


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0, 1 for no values: anything is possible)."""
    if not values:
        return 0.0, 1.0
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, abs(mean)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)
