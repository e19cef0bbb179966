"""One dtype at the boundary: labels stored as uint8 (Fashion-MNIST's idx files), int32,
int64 or strings (a CSV manifest) reach every strategy as int64 codes, on the host's
numpy paths and on the torch paths a GPU takes (run here on the CPU), with identical
metrics. uint8 labels once turned kNN's "not found" (-1) into 255 on numpy 2.4, raised
OverflowError on numpy 2.5, and were read as a mask by torch's indexing on a GPU."""

import dataclasses
from functools import cache, partial
from pathlib import Path

import numpy as np
import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)
from PIL import Image

from harness.cell import run_cell
from harness.datasets import DATASETS
from harness.datasets.base import ArraySplit, Dataset, DatasetSpec
from harness.datasets.synthetic import open_synthetic
from harness.errors import DatasetError
from harness.suite import load_suite

STRATEGIES = ["knn", "linear", "mlp", "zeroshot", "partial:1", "finetune", "cross:{shelf}"]
SOURCES = ["uint8", "int32", "int64", "str"]

SUITE = """
[suite]
name = "dtypes"
[profile]
n_train = 72
n_test = 48
image_size = 32
batch_size = 24
[strategy.mlp]
trials = 1
max_epochs = 3
width = [16]
[strategy.finetune]
epochs = 1
batch_size = 12
lr = 2e-3
[strategy.partial]
epochs = 1
batch_size = 12
lr = 2e-3
[[cells]]
datasets = ["{products}"]
backbones = ["test-clip"]
strategies = ["knn", "linear", "mlp", "zeroshot"]
[[cells]]
datasets = ["{products}"]
backbones = ["test-efficientnet"]
strategies = ["partial:1", "finetune", "cross:{shelf}"]
"""


def retyped(name: str, dtype: str) -> Dataset:
    """The synthetic set ``name`` with its labels stored as ``dtype``."""
    data = open_synthetic(name)
    splits = {
        split: ArraySplit(s.images, s.labels.astype(dtype))  # type: ignore[attr-defined]
        for split, s in data.splits.items()
    }
    return Dataset(f"{name}-{dtype}", data.fingerprint, splits, data.classes)


@cache
def as_files(name: str, root: Path) -> Path:
    """The synthetic set ``name`` as PNG files and a CSV manifest, whose labels are text
    (the class numbers: its names, in ``class_names``, are the prompts zero-shot reads)."""
    data = open_synthetic(name)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split"]
    for split, s in data.splits.items():
        for i, (image, label) in enumerate(zip(s.images, s.labels, strict=True)):  # type: ignore[attr-defined]
            path = f"{split}/{i:04d}.png"
            (root / split).mkdir(exist_ok=True)
            Image.fromarray(image).save(root / path)
            rows.append(f"{path},{label},{split}")
    (root / "items.csv").write_text("\n".join(rows) + "\n")
    (root / "names.txt").write_text("\n".join(data.classes) + "\n")
    return root


def declare(tmp_path: Path, source: str, extend) -> str:
    """A suite over the products and shelf sets, their labels stored as ``source``."""
    names = {}
    for base in ("synthetic-products", "synthetic-shelf"):
        name = f"{base}-{source}"
        names[base] = name
        if source == "str":
            continue
        spec = dataclasses.replace(
            DATASETS.get(base), name=name, open=partial(retyped, base, source)
        )
        extend(DATASETS, spec)
    text = SUITE.format(products=names["synthetic-products"], shelf=names["synthetic-shelf"])
    if source == "str":
        for base, name in names.items():
            root = as_files(base, tmp_path.parent / "files" / base)
            text += f'[datasets.{name}]\nformat = "csv"\nroot = "{root}"\nmanifest = "items.csv"\n'
            text += f'class_names = "{root / "names.txt"}"\n'
    return text


@pytest.mark.parametrize("paths", ["numpy", "torch"])
def test_every_strategy_reads_any_label_dtype_alike(tmp_path, monkeypatch, paths, extend):
    if paths == "torch":
        monkeypatch.setenv("SHELFBENCH_TORCH_PATHS", "1")
    metrics = {}
    for source in SOURCES:
        folder = tmp_path / source
        folder.mkdir()
        (folder / "s.toml").write_text(declare(tmp_path, source, extend))
        for cell in load_suite(folder / "s.toml").cells:
            row = run_cell(cell, tmp_path / "cache")
            strategy = cell.strategy.partition(":")[0]
            metrics[source, strategy] = row.metrics
    for strategy in {s for _, s in metrics}:
        first = metrics["int64", strategy]
        for source in SOURCES:
            assert metrics[source, strategy] == first, (source, strategy)


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        (np.array([0.0, 1.0]), "are float64, not integer codes"),
        (np.array([0, -1]), "hold -1; codes are 0 or more"),
    ],
)
def test_labels_that_are_not_codes_are_one_line(labels, said):
    images = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(DatasetError, match=said):
        Dataset("odd", "f", {"train": ArraySplit(images, labels)}, ("a", "b"))


def test_a_dataset_hands_out_int64_codes():
    spec = DatasetSpec("u8", "test", ("a",), ("train",), "split", lambda: retyped("x", "u8"))
    data = Dataset(
        spec.name, "f", {"train": ArraySplit(np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.uint8))}
    )
    assert data.split("train").labels.dtype == np.int64
