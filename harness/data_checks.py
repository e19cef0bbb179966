"""What a cell checks in its data before and after it measures: unreadable images left
out (or failing the cell), a single class refused, classes the train split lacks, and a
near-chance accuracy that is more often a label-mapping bug than a bad model."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from harness.datasets import Dataset
from harness.embeddings import Embedded
from harness.errors import DatasetError
from harness.records import Skipped
from harness.suite import Cell


def drop_unreadable(
    cell: Cell, embedded: dict[str, Embedded], dataset: Dataset
) -> tuple[dict[str, Embedded], Skipped]:
    """Leave out items whose image could not be read (NaN rows in the cache), counting
    them, or fail the cell if its profile says ``bad_images = "fail"``."""
    kept: dict[str, Embedded] = {}
    skipped: dict[str, int] = {}
    examples: list[str] = []
    for split, e in embedded.items():
        bad = np.isnan(e.vectors).any(axis=1)
        skipped[split] = int(bad.sum())
        data = dataset.split(split)
        examples += [str(data.path(int(i))) for i in e.indices[bad][:3] if hasattr(data, "path")]
        kept[split] = dataclasses.replace(
            e,
            vectors=e.vectors[~bad],
            labels=e.labels[~bad],
            indices=e.indices[~bad],
            ids=None if e.ids is None else e.ids[~bad],
            query=None if e.query is None else e.query[~bad],
        )
    for split, e in kept.items():
        if len(e.indices) == 0:
            raise DatasetError(
                f"{cell.id}: none of the {skipped[split]} {split} images could be read, e.g. "
                f"{', '.join(examples) or 'see the log'}"
            )
    if sum(skipped.values()) and cell.profile.bad_images == "fail":
        raise DatasetError(
            f"{cell.id}: {sum(skipped.values())} images could not be read, e.g. "
            f'{", ".join(examples) or "see the log"}; fix them, or set bad_images = "skip" '
            "in the suite's [profile] (the embeddings of the rest are cached)"
        )
    return kept, Skipped(skipped, examples)


def check_classes(
    cell: Cell, train: Embedded, test: Embedded, classes: tuple[str, ...], learns: bool
) -> list[str]:
    """Refuse a cell whose items all have one class (every metric would be a perfect 1.0);
    warn when test classes have no train item and the strategy compares test items with
    train labels (``learns``): those items can never be classified right, and under the
    split protocol their queries have nothing relevant to retrieve."""
    present = np.union1d(train.labels, test.labels)
    if len(present) < 2:
        name = classes[present[0]] if len(present) and present[0] < len(classes) else present
        raise DatasetError(
            f"{cell.id}: every item the cell uses has the one class {name!r}, so every "
            "metric would be a perfect 1.0; a benchmark needs two classes or more"
        )
    absent = np.setdiff1d(test.labels, train.labels)
    if not learns or not len(absent):
        return []
    n_items = int(np.isin(test.labels, absent).sum())
    examples = ", ".join(repr(classes[c]) if c < len(classes) else str(c) for c in absent[:3])
    return [
        f"{len(absent)} test class(es) have no train item (e.g. {examples}): their "
        f"{n_items} of {len(test.labels)} test items can never be classified right, and "
        "have nothing relevant to retrieve from the train split"
    ]


def shared_images(dataset: Dataset, train: Embedded, test: Embedded) -> list[str]:
    """Warn when test items show the same image (the same decoded pixels) as train items:
    a query then retrieves its own copy and a probe is scored on what it was fitted to,
    so every metric is inflated. Only what the cell reads is compared; an unreadable
    image is left out."""
    if not len(train.indices):
        return []
    known = _pixels(dataset, "train", train.indices)  # of these items, and maybe others
    seen = {known[int(i)] for i in train.indices} - {None}
    digests = _pixels(dataset, "test", test.indices)
    copies = [int(i) for i in test.indices if digests[int(i)] in seen]
    if not copies:
        return []
    return [
        f"{len(copies)} of {len(test.indices)} test items show an image that is also a train "
        f"item's (the same pixels; e.g. test item {copies[0]}): every metric is inflated; "
        "keep each image in one split"
    ]


# Per dataset fingerprint and split, each decoded item's digest (None: unreadable), so that
# the cells of one dataset in a run decode its images once, not once each.
_DIGESTS: dict[tuple[str, str], dict[int, bytes | None]] = {}


def _pixels(dataset: Dataset, split: str, indices: np.ndarray) -> dict[int, bytes | None]:
    """The digests of the items ``indices`` of ``split`` (decoded pixels and size)."""
    known = _DIGESTS.setdefault((dataset.fingerprint, split), {})
    data = dataset.split(split)
    for index in (int(i) for i in indices):
        if index not in known:
            try:
                image = data.image(index)
            except Exception:  # unreadable images are counted and reported elsewhere
                known[index] = None
                continue
            digest = hashlib.sha256(f"{image.size}".encode())
            digest.update(np.asarray(image).tobytes())
            known[index] = digest.digest()
    return known


def sanity_warnings(metrics: dict[str, float], n_classes: int) -> list[str]:
    """A near-chance accuracy on a few-class dataset is more often a label-mapping bug
    (class folders numbered differently in train and test) than a bad model."""
    accuracy = metrics.get("accuracy")
    if accuracy is None or n_classes > 50 or accuracy > 1.5 / n_classes:
        return []
    return [
        f"accuracy {accuracy:.3f} is near chance (1/{n_classes} = {1 / n_classes:.3f}); "
        "if the backbone is pretrained, check that train and test labels map the same "
        "classes to the same numbers (e.g. ImageFolder class folders in both splits)"
    ]
