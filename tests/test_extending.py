"""Each kind of extension is one registry entry and nothing else: a model library, an
index engine, a strategy and a metric, each added here in a few lines (as its own module
in harness/backbones/libraries/, harness/index/, harness/strategies/ or one entry in
harness/metrics.py would add it) and used by a suite at once."""

import dataclasses
from typing import Any

import numpy as np
import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)
import torch

from harness import provenance
from harness.backbones.base import Preprocess
from harness.backbones.libraries import LIBRARIES, Library
from harness.cell import run_cell
from harness.index import ENGINES, Engine
from harness.metrics import METRICS, Metric, recall_at_k
from harness.settings import Table
from harness.stats import classification_items
from harness.strategies import STRATEGIES, Features, Outcome, StrategySpec
from harness.strategies.knn import retrieval
from harness.suite import load_suite

CELL = '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["{backbone}"]\n'
CELL += 'strategies = ["{strategy}"]\n[profile]\nimage_size = 16\n'


def run(tmp_path, text: str, **cell: str):
    (tmp_path / "s.toml").write_text(text + CELL.format(**cell))
    (found,) = load_suite(tmp_path / "s.toml").cells
    return run_cell(found, tmp_path / "cache")


class MeanColour(torch.nn.Module):
    """A model library's whole model: each image's mean colour, projected."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.project = torch.nn.Linear(3, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x.mean(dim=(2, 3)))


def test_a_model_library_is_one_record(tmp_path, monkeypatch, extend):
    def build(spec: Any, weights: Any, head: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        return MeanColour().eval()

    def preprocess(spec: Any) -> Preprocess:
        return Preprocess(16, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    toy = Library("toy", build, preprocess, distributions=("toy-models",))
    extend(LIBRARIES, toy)
    table = '[backbones.toy-model]\nlibrary = "toy"\nmodel = "mean-colour"\nweights = "random"\n'
    result = run(tmp_path, table, backbone="toy-model", strategy="knn")
    assert result.metrics["accuracy"] > 0.3  # colour alone tells half the classes apart

    # Its package's version keys what it computed: an upgrade embeds and judges again.
    installed = {"toy-models": "1.0"}
    real = provenance.version
    monkeypatch.setattr(provenance, "version", lambda name: installed.get(name) or real(name))
    first = run(tmp_path, table, backbone="toy-model", strategy="knn")
    again = run(tmp_path, table, backbone="toy-model", strategy="knn")
    installed["toy-models"] = "1.1"
    upgraded = run(tmp_path, table, backbone="toy-model", strategy="knn")
    assert (first.cache, again.cache, again.result_cache) == ("miss", "hit", "hit")
    assert (upgraded.cache, upgraded.result_cache) == ("miss", "miss")


@dataclasses.dataclass
class Brute:
    """An index engine's whole index: exact inner product."""

    gallery: np.ndarray
    memory_bytes: int | None = None

    def tune(self, search: dict[str, Any]) -> None:
        pass

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self.gallery.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), order

    def close(self) -> None:
        pass


class Nothing(Table):
    """None."""


def test_an_index_engine_is_one_record(tmp_path, monkeypatch, extend):
    brute = Engine(
        "brute", lambda gallery, setting: Brute(gallery), "exact", Nothing, Nothing, Nothing
    )
    extend(ENGINES, brute)
    table = '[strategy.knn]\nindex = "brute:flat"\n'
    result = run(tmp_path, table, backbone="test-vit", strategy="knn")
    assert result.index.engine == "brute"
    assert result.metrics["mmp@5"] == result.index.exact_metrics["mmp@5"]


class CentroidSettings(Table):
    """None."""


def centroid(data: Features, params: Any) -> Outcome:
    """Nearest class centroid on the embeddings."""
    centres = np.stack([data.train[data.train_labels == c].mean(0) for c in range(data.n_classes)])
    scores = -((data.test[:, None, :] - centres[None]) ** 2).sum(-1)
    return Outcome(classification_items(data.test_labels, scores), {"fit": 0.0, "eval": 0.0})


def test_a_strategy_is_one_record(tmp_path, monkeypatch, extend):
    spec = StrategySpec(
        "centroid", centroid, ("classification",), "accuracy", CentroidSettings, centroid.__doc__
    )
    extend(STRATEGIES, spec)
    result = run(tmp_path, "", backbone="test-vit", strategy="centroid")
    assert 0 <= result.metrics["accuracy"] <= 1 and "macro_f1" in result.metrics


def test_a_metric_declares_its_depth_and_is_ranked_that_deep(monkeypatch, extend):
    """recall@100 on a leave-one-out set whose classes hold 9 items: ranking only as deep
    as the largest class (or 10) would compute recall@10 under its name."""
    recall100 = Metric(
        "recall@100", "retrieval", per_item=lambda r, n: recall_at_k(r, 100), depth=100
    )
    extend(METRICS, recall100)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 9)
    vectors = rng.normal(size=(len(labels), 16)).astype(np.float32)
    vectors += 0.3 * rng.normal(size=(40, 16)).astype(np.float32)[labels]
    data = Features(vectors[:0], labels[:0], vectors, labels, 40, protocol="leave-one-out")
    got = retrieval(data, data.train, data.test, 10).items["recall@100"]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :100]
    expected = (labels[top] == labels[:, None]).any(axis=1).astype(float)
    np.testing.assert_array_equal(got, expected)
    assert got.mean() > recall_at_k(labels[top] == labels[:, None], 10).mean()


@pytest.mark.parametrize("registry", [LIBRARIES, ENGINES, STRATEGIES, METRICS])
def test_each_registry_lists_what_its_modules_register(registry):
    assert len(registry.names()) >= 2
