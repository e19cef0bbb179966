"""Embeddings a team already has: a ``[backbones.NAME] vectors = "embeddings.parquet"``
backbone is a Parquet table of ``id`` and ``vector`` columns, one row per item, judged by
every strategy that needs only embeddings (knn, linear, mlp, indexes, the baseline and
upgrade gates).

An item's ``id`` is its key in the dataset: a manifest's ``key`` column (default: its
path or URL), a folder dataset's relative path, a WebDataset sample's key, ``train:123``
for an in-memory set. ``shelfbench export CELL --format parquet`` writes such a table
(``id``, ``split``, ``label``, ``vector``), so an export reads back as a backbone.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.cache import atomic_write, keep
from harness.datasets.base import Dataset
from harness.errors import EmbeddingError

VECTORS_VERSION = 1
# The Parquet schema's metadata key that marks a table shelfbench wrote (export).
MARK = b"shelfbench"


def item_key(dataset: Dataset, split: str, index: int) -> str:
    """The name precomputed vectors find an item by (see the module doc)."""
    data = dataset.split(split)
    return data.key(index) if hasattr(data, "key") else f"{split}:{index}"


@dataclass(frozen=True)
class Table:
    """A vectors file read and checked: row of each id, and the vectors."""

    rows: dict[str, int]
    vectors: np.ndarray


@functools.cache
def read_table(path: str, sha256: str) -> Table:
    """The table at ``path`` (whose content is ``sha256``), checked: an ``id`` and a
    ``vector`` column, no id twice, every vector of one width, no NaN or inf."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["id", "vector"])
    except (OSError, ValueError, KeyError) as exc:
        raise EmbeddingError(
            f"vectors {path}: {' '.join(str(exc).split())[:200]}; a vectors table has the "
            "columns id (each item's key) and vector (a list of numbers)"
        ) from None
    if table.num_rows == 0:
        raise EmbeddingError(f"vectors {path} has no rows; export the embeddings again")
    kind = table.schema.field("vector").type
    is_list = any(
        test(kind)
        for test in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    )
    if not is_list or not (
        pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)
    ):
        raise EmbeddingError(
            f"vectors {path}: the vector column is {kind}, not a list of numbers "
            "(list<float>); write each vector as a list of floats"
        )
    ids = [str(i) for i in table.column("id").to_pylist()]
    rows: dict[str, int] = {}
    for row, item in enumerate(ids):
        if item in rows:
            twice = f"rows {rows[item] + 1} and {row + 1}"
            raise EmbeddingError(f"vectors {path}: id {item!r} is in {twice}; ids are unique")
        rows[item] = row
    column = table.column("vector").combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    width = int(lengths[0]) if len(lengths) else 0
    odd = np.flatnonzero(lengths != width)
    if len(odd) or width == 0:
        at = int(odd[0]) if len(odd) else 0
        raise EmbeddingError(
            f"vectors {path}: the vector of id {ids[at]!r} has {int(lengths[at])} numbers, "
            f"the first row's {width}; every vector has one width"
        )
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(len(ids), width)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise EmbeddingError(
            f"vectors {path}: {int(bad.sum())} rows hold NaN or inf, e.g. id {ids[first]!r}"
        )
    return Table(rows, vectors)


def write_table(
    path: Path, keys: list[str], splits: list[str], labels: list[str], vectors: np.ndarray,
    meta: dict[str, object],
) -> None:  # fmt: skip
    """A vectors table (``id``, ``split``, ``label``, ``vector``), marked as shelfbench's,
    written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
    table = pa.table({"id": keys, "split": splits, "label": labels, "vector": column})
    table = table.replace_schema_metadata({MARK: json.dumps(meta).encode()})
    atomic_write(path, lambda p: pq.write_table(table, p), 0o644)


def is_ours(path: Path) -> bool:
    """A Parquet table shelfbench wrote (an export)."""
    import pyarrow.parquet as pq

    try:
        return MARK in (pq.read_schema(path).metadata or {})
    except (OSError, ValueError):
        return False


def changed_since_last_read(path: str, sha256: str, memo_dir: Path) -> str:
    """A note when the file at ``path`` held other content when it was last read here
    (its cells are then judged on the new vectors); remembers this content."""
    memo = memo_dir / "vectors-seen.json"
    try:
        seen = json.loads(memo.read_text())
    except (OSError, ValueError):
        seen = {}
    before = seen.get(path)
    if before != sha256:
        seen[path] = sha256
        keep(memo, lambda p: p.write_text(json.dumps(seen, indent=0)))
    if before is None or before == sha256:
        return ""
    return (
        f"vectors file {path} changed since it was last read (sha256 {before[:12]}… → "
        f"{sha256[:12]}…); its cells are judged on the new vectors"
    )


def vectors_for(
    dataset: Dataset, split: str, indices: np.ndarray, path: str, sha256: str, owner: str
) -> tuple[np.ndarray, list[str]]:
    """The vectors of ``indices`` of ``split`` and notes (ids of no item of the dataset);
    an item without a vector is an error naming how many and one of them."""
    table = read_table(path, sha256)
    keys = [item_key(dataset, split, int(i)) for i in indices]
    missing = [k for k in keys if k not in table.rows]
    if missing:
        raise EmbeddingError(
            f"{owner}: {len(missing)} of the {len(keys)} {split} items of {dataset.name} have "
            f"no vector in {path} (e.g. id {missing[0]!r}); its id column holds each item's "
            "key (a manifest's key column, else its path; train:123 for in-memory sets)"
        )
    known = {item_key(dataset, s, i) for s in dataset.splits for i in range(len(dataset.split(s)))}
    extra = [k for k in table.rows if k not in known]
    notes = [
        f"{len(extra)} ids in {path} name no item of {dataset.name} (e.g. {extra[0]!r}); "
        "they were not judged"
    ] if extra else []  # fmt: skip
    return table.vectors[[table.rows[k] for k in keys]], notes
