"""``shelfbench export``: the embeddings a cell used, to check a number without shelfbench
(``.npy`` files per split), or as a vectors table (Parquet: ``id``, ``split``, ``label``,
``vector``) that a suite reads back as a ``[backbones.NAME] vectors = ...`` backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.embeddings import Embedded
from harness.suite import Cell
from harness.vectors import item_key, write_table

NOTE = "raw backbone embeddings; L2-normalise them for cosine retrieval"


def meta(cell: Cell, embedded: dict[str, Embedded]) -> dict[str, object]:
    return {
        "cell": cell.id,
        "suite": cell.suite,
        "note": NOTE,
        "keys": {split: e.key for split, e in embedded.items()},
    }


def write_npy(out: Path, cell: Cell, embedded: dict[str, Embedded]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, e in embedded.items():
        np.save(out / f"{split}.npy", e.vectors)
        np.save(out / f"{split}_labels.npy", e.labels)
        np.save(out / f"{split}_indices.npy", e.indices)
    (out / "meta.json").write_text(json.dumps(meta(cell, embedded), indent=1) + "\n")


def write_parquet(out: Path, cell: Cell, embedded: dict[str, Embedded]) -> None:
    """One row per item of the splits the cell read; ``id`` is the item's key."""
    dataset = cell.dataset_spec.open()
    keys, splits, labels = [], [], []
    for split, e in embedded.items():
        keys += [item_key(dataset, split, int(i)) for i in e.indices]
        splits += [split] * len(e.indices)
        labels += [dataset.classes[label] if dataset.classes else str(label) for label in e.labels]
    vectors = np.concatenate([e.vectors for e in embedded.values()])
    write_table(out, keys, splits, labels, vectors, meta(cell, embedded))
