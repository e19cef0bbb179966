"""Datasets: one declarative registry entry each. Importing this package registers them."""

from harness.datasets import fashion_mnist, public, synthetic
from harness.datasets.base import DATASETS, ArraySplit, Dataset, DatasetSpec, Split, subset

DATASETS.freeze()  # a suite's own datasets live in its catalogue (harness.catalogue)

__all__ = [
    "DATASETS",
    "ArraySplit",
    "Dataset",
    "DatasetSpec",
    "Split",
    "fashion_mnist",
    "open_dataset",
    "public",
    "subset",
    "synthetic",
]


def open_dataset(name: str) -> Dataset:
    """Open a registered dataset (raises DatasetUnavailable with how-to if it is missing)."""
    return DATASETS.get(name).open()
