"""The adaptive strategy: its decisions on constructed rungs, then on a cell."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from harness.adaptive import Policy, Prior, Trained, climb, fit_priors, interval
from harness.errors import SuiteError
from harness.strategies import STRATEGIES, Features

LADDER = ["knn", "linear", "mlp", "partial:2", "finetune"]


class Fake:
    """Rungs from a table: final validation accuracy (a curve for fine-tuning rungs),
    full seconds, and the estimate the policy budgets with; logs every call."""

    n_validation = 2000

    def __init__(self, accuracy, seconds=None, estimate=None):
        self.accuracy = accuracy
        self.seconds = seconds or {r: 1.0 for r in accuracy}
        self.estimates = estimate or self.seconds
        self.calls = []
        self.done = {}  # epochs each fine-tuning rung has trained (a resume pays the rest)

    def estimate(self, rung):
        return self.estimates[rung]

    def epochs(self, rung):
        value = self.accuracy[rung]
        return len(value) if isinstance(value, tuple) else 1

    def train(self, rung, until):
        self.calls.append((rung, until))
        value = self.accuracy[rung]
        if not isinstance(value, tuple):
            return Trained(value, self.seconds[rung])
        k = len(value) if until is None else until
        seconds = self.seconds[rung] * (k - self.done.get(rung, 0)) / len(value)
        self.done[rung] = k
        return Trained(value[k - 1], seconds, value[:k])


def policy(priors=None, budget=1.0, epsilon=0.01):
    return Policy(epsilon, budget, 0.9, 1, priors or {})


ACCURACY = {
    "knn": 0.80,
    "linear": 0.85,
    "mlp": 0.86,
    "partial:2": (0.80, 0.86, 0.88),
    "finetune": (0.70, 0.85, 0.90),
}


def test_without_priors_every_rung_trains_and_the_best_is_picked():
    rungs = Fake(ACCURACY)
    path = climb(LADDER, rungs, policy())
    assert path.picked == "finetune"
    assert [s.action for s in path.steps] == ["ran"] * 3 + ["piloted", "resumed"] * 2
    assert path.accuracy["finetune"] == 0.90


def test_the_cheapest_rung_within_epsilon_of_the_best_is_picked():
    rungs = Fake({**ACCURACY, "finetune": (0.70, 0.80, 0.885)})
    assert climb(LADDER, rungs, policy()).picked == "partial:2"  # 0.88 within 0.01 of 0.885


def test_a_rung_that_cannot_pay_is_never_trained():
    # mlp removes no error on average (sd 0.01): its bound is under ε; fine-tuning may pay.
    priors = {"mlp": Prior(0.0, 0.01), "finetune": Prior(0.3, 0.1, 0.2, 0.1)}
    rungs = Fake(ACCURACY)
    path = climb(LADDER, rungs, policy(priors))
    assert ("mlp", None) not in rungs.calls
    mlp = next(s for s in path.steps if s.rung == "mlp")
    assert mlp.action == "skipped" and mlp.upper_gain <= 0.01 and "≤ ε" in mlp.reason


def test_a_pilot_that_cannot_catch_up_is_not_resumed():
    # finetune's pilot reaches 0.70; its other epochs remove 10% ± 2% of the error: the
    # bound (about 0.75) stays under the best so far (partial:2, 0.88).
    priors = {"finetune": Prior(0.3, 0.3, 0.1, 0.02)}
    rungs = Fake(ACCURACY)
    path = climb(LADDER, rungs, policy(priors))
    assert rungs.calls.count(("finetune", 1)) == 1 and ("finetune", None) not in rungs.calls
    step = [s for s in path.steps if s.rung == "finetune"]
    assert len(step) == 1 and step[0].action == "piloted" and step[0].reason.startswith("stopped")
    assert path.picked == "partial:2" and "finetune" not in path.accuracy


def test_budget_exhaustion_stops_the_climb():
    seconds = {"knn": 1.0, "linear": 1.0, "mlp": 10.0, "partial:2": 30.0, "finetune": 60.0}
    rungs = Fake(ACCURACY, seconds)
    path = climb(LADDER, rungs, policy(budget=0.2))  # 0.2 × 102 s: knn, linear and mlp fit
    assert [s.action for s in path.steps[-2:]] == ["skipped", "skipped"]
    assert all(rung not in ("partial:2", "finetune") for rung, _ in rungs.calls)
    assert path.spent <= path.budget and all("budget" in s.reason for s in path.steps[-2:])


def test_a_pilot_that_fits_the_budget_left_runs_after_a_rung_that_did_not():
    seconds = {"knn": 1.0, "linear": 1.0, "mlp": 40.0, "partial:2": 30.0, "finetune": 60.0}
    rungs = Fake(ACCURACY, seconds)
    path = climb(LADDER, rungs, policy(budget=0.2))  # 26.4 s: mlp (40) no, a pilot (10) yes
    assert ("mlp", None) not in rungs.calls and ("partial:2", 1) in rungs.calls
    assert path.spent <= path.budget


def test_identical_runs_give_identical_paths():
    priors = {"mlp": Prior(0.05, 0.05), "partial:2": Prior(0.2, 0.2, 0.1, 0.1)}
    assert climb(LADDER, Fake(ACCURACY), policy(priors)) == climb(
        LADDER, Fake(ACCURACY), policy(priors)
    )


def test_priors_are_shares_of_the_error_left():
    logs = [
        {"validation": {"linear": 0.8, "finetune": 0.9}, "curves": {"finetune": [0.6, 0.9]}},
        {"validation": {"linear": 0.9, "finetune": 0.9}, "curves": {"finetune": [0.8, 0.9]}},
    ]
    prior = fit_priors(logs)["finetune"]
    assert prior.gain == pytest.approx(0.25) and prior.pairs == 2  # shares 0.5 and 0
    assert prior.rest == pytest.approx(0.625)  # shares 0.75 and 0.5
    assert prior.gain_sd == pytest.approx(np.std([0.5, 0.0], ddof=1))


def test_the_validation_interval_is_wilsons():
    low, high = interval(0.9, 100)
    assert (round(low, 3), round(high, 3)) == (0.826, 0.945)


@pytest.mark.parametrize(
    "ladder, says",
    [
        (["linear", "knn"], "cost order"),
        (["knn", "partial"], "partial:N"),
        (["knn", "partial:x"], "whole number"),
        (["knn", "mlp:2"], "only partial"),
        (["mlp", "finetune"], "to judge the rest by"),
        (["knn", "cross"], "no rung"),
    ],
)
def test_a_ladder_it_cannot_climb_is_one_line(ladder, says):
    with pytest.raises(SuiteError, match=says) as error:
        STRATEGIES.get("adaptive").params({"ladder": ladder})
    assert "\n" not in str(error.value)


def blobs(n=400, modes=3, seed=0):
    """Ten classes in 32 dimensions, ``modes`` Gaussian blobs each."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(10, modes, 32))

    def draw(n):
        labels = rng.integers(0, 10, n)
        x = means[labels, rng.integers(0, modes, n)] + rng.normal(scale=1.5, size=(n, 32))
        return x.astype(np.float32), labels.astype(np.int64)

    (train, train_labels), (test, test_labels) = draw(n), draw(200)
    return Features(train, train_labels, test, test_labels, 10)


def test_on_vectors_it_climbs_knn_linear_mlp_and_reads_test_once_for_its_pick(monkeypatch):
    from harness.strategies import adaptive

    spec = STRATEGIES.get("adaptive")
    params = spec.params({"epsilon": 0.01, "budget": 1.0})
    ran = []
    for name in ("knn", "linear", "mlp"):
        strategy = STRATEGIES.get(name)
        wrapped = dataclasses.replace(strategy, run=recorded(strategy.run, ran, name))
        monkeypatch.setitem(STRATEGIES._entries, name, wrapped)
    monkeypatch.setattr(adaptive, "priors", dict)
    data = blobs()
    outcome = spec.run(data, params)
    chosen = outcome.chosen
    assert [s["rung"] for s in chosen["path"]] == ["knn", "linear", "mlp"]  # no images
    tested = [name for name, test in ran if len(test) == len(data.test)]
    assert tested == [chosen["picked"]]  # validation runs see 80 of 400, test 200
    judged = {s["rung"]: s["accuracy"] for s in chosen["path"] if s["action"] == "ran"}
    assert judged[chosen["picked"]] >= max(judged.values()) - 0.01
    again = spec.run(data, params).chosen["path"]
    assert [(s["rung"], s["action"], s["accuracy"]) for s in again] == [
        (s["rung"], s["action"], s["accuracy"]) for s in chosen["path"]
    ]


def recorded(run, ran, name):
    def wrapper(data, params):
        ran.append((name, data.test))
        return run(data, params)

    return wrapper


def test_on_images_it_pilots_resumes_and_evaluates_the_run_it_trained(monkeypatch, tmp_path):
    """A cell of a random-init model: every rung trains (no priors), fine-tuning rungs are
    piloted for one epoch, resumed, validated every epoch, their heads starting from the
    linear rung's probe; the report shows the path."""
    import timm  # noqa: F401  (imported before the cell runs, as the other tests do)

    from harness import document
    from harness.cell import run_cell
    from harness.strategies import adaptive
    from harness.suite import Cell, Profile

    monkeypatch.setenv("SHELFBENCH_DATA", str(Path(__file__).parents[1] / "fixtures/datasets"))
    monkeypatch.setattr(adaptive, "priors", dict)
    # budget 10: ten times the ladder's estimate, which tiny data makes noisy, never binds
    train = {"epochs": 2, "batch_size": 16, "lr": 2e-3, "head_lr": 1e-2, "budget": 10.0}
    params = STRATEGIES.get("adaptive").params(train)
    profile = Profile(n_train=96, n_test=48, image_size=64, batch_size=16)
    cell = Cell("t", "synthetic-products", "test-efficientnet", "adaptive", profile, params)
    row = run_cell(cell, tmp_path)
    steps = row.chosen["path"]
    assert [(s["rung"], s["action"]) for s in steps] == [
        ("knn", "ran"),
        ("linear", "ran"),
        ("mlp", "ran"),
        ("partial:2", "piloted"),
        ("partial:2", "resumed"),
        ("finetune", "piloted"),
        ("finetune", "resumed"),
    ]
    assert row.chosen["epsilon"] == cell.gate.epsilon  # the suite's [gate] epsilon
    assert row.chosen["validation"]["items"] == 20
    runs = sorted((tmp_path / "finetune").glob("*/*/summary.json"))
    assert len(runs) == 2  # partial:2 and finetune, each resumed in its own folder
    for summary in runs:
        key = json.loads((summary.parent / "key.json").read_text())
        assert {"head_sha256", "validation_sha256"} <= set(key)  # LP-FT, on the fit items
        history = json.loads(summary.read_text())["history"]
        assert [h["epoch"] for h in history] == [1, 2]
        assert all(0 <= h["validation_accuracy"] <= 1 for h in history)
    text = document.markdown(document.build({}, [row]))
    assert "picked" in text and "| partial:2" in text and "piloted" in text
    again = run_cell(cell, tmp_path, recompute=True)  # every run read, finished, from disk
    assert again.metrics == row.metrics
    for first, second in zip(steps, again.chosen["path"], strict=True):
        assert (first["rung"], first["action"], first["accuracy"]) == (
            second["rung"], second["action"], second["accuracy"])  # fmt: skip
        if first["rung"] in ("partial:2", "finetune"):  # charged what its epochs cost
            assert first["seconds"] == pytest.approx(second["seconds"])
