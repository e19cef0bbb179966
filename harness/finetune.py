"""Fine-tuning a backbone with a linear classification head, resumable epoch by epoch.

A run lives in ``<cache>/finetune/<digest of its key>/``. Its key is the model side of the
embedding cache key plus the training data (dataset fingerprint, the exact train items),
the preprocessing, the trainable blocks and every training setting, so a changed config
starts a new run and never resumes a stale one. After each epoch the run writes a
checkpoint (model, optimiser, history, compute seconds) atomically; an interrupted run
resumes from the last one (``harness.training`` is the loop). When training ends the run
keeps ``tuned.pt`` (backbone weights, hashed into the embedding key), ``head.npz`` and
``summary.json``, and drops the epoch checkpoints.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from filelock import FileLock
from pydantic import Field

from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.weights import ResolvedWeights, file_sha256
from harness.cache import atomic_write, digest
from harness.datasets.base import Dataset
from harness.embeddings import Checkpoint, model_key
from harness.paths import may_write
from harness.runtime import cpu_training, device, torch_paths, training_threads
from harness.settings import Count, CropRange, Positive, Seed, Table, Tolerance, Unit
from harness.training import train

# Bump when training changes in a way the key's settings do not show.
FINETUNE_VERSION = 2


class TrainSettings(Table):
    """``[strategy.finetune]`` (and ``partial``, ``cross``): every setting of a run, all of
    which go into its key. A batch holds two images at least: a batch norm that trains
    cannot normalise one."""

    epochs: Count = 3
    batch_size: Annotated[int, Field(ge=2)] = 32
    lr: Positive = 1e-4
    head_lr: Positive = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.05
    warmup: Unit = 0.1  # a share of all steps
    label_smoothing: Tolerance = 0.1
    clip_grad: Positive = 1.0
    augment: bool = True
    crop_scale: CropRange = (0.35, 1.0)  # the random resized crop's share of the area
    amp: bool = True
    seed: Seed = 0


TRAIN_DEFAULTS: dict[str, Any] = TrainSettings().model_dump()


@dataclass(frozen=True)
class Tuned:
    """A finished run: the checkpoint to embed with, the head it trained, what it cost."""

    checkpoint: Checkpoint
    head: tuple[np.ndarray, np.ndarray]
    summary: dict[str, Any]


@dataclass(frozen=True)
class Run:
    """What a run trains: the backbone (all of it, or its last ``blocks`` blocks) on the
    ``indices`` items of the dataset's train split, with ``params``' training settings.
    An unreadable image is skipped, or with ``skip_unreadable`` false stops the run."""

    dataset: Dataset
    indices: np.ndarray
    spec: BackboneSpec
    weights: ResolvedWeights
    pre: Preprocess
    blocks: int | None
    params: Mapping[str, Any]
    skip_unreadable: bool = True

    @property
    def settings(self) -> dict[str, Any]:
        return {k: self.params[k] for k in TRAIN_DEFAULTS}

    def key(self) -> dict[str, object]:
        return {
            **model_key(self.spec, self.weights, device()),
            "finetune_version": FINETUNE_VERSION,
            "dataset": self.dataset.name,
            "dataset_fingerprint": self.dataset.fingerprint,
            "split": "train",
            "items_sha256": digest({"items": self.indices.astype(int).tolist()}),
            "preprocess": self.pre.as_dict(),
            "blocks": self.blocks,
            # What training learns depends on the CPU thread count (not on xdist workers).
            "cpu_threads": training_threads() if device() == "cpu" else None,
            "torch_paths": torch_paths(),  # bf16 autocast (with amp) and the fused optimiser
            "settings": {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()
            },
        }


def finetune(run: Run, cache_root: Path) -> Tuned:
    """The fine-tuned backbone of ``run``: read if finished, resumed if interrupted,
    trained otherwise (one process at a time per run); under a read-only cache, trained
    in a scratch folder for this run only."""
    key = run.key()
    name = digest(key)
    run_dir = cache_root / "finetune" / name[:2] / name
    if not may_write(run_dir / "lock"):  # a read-only cache: a finished run, or one for now
        if not (run_dir / "summary.json").exists():
            run_dir = Path(tempfile.mkdtemp(prefix="shelfbench-finetune-"))
            with cpu_training():
                train(run_dir, run)
        return tuned_from(run_dir, name)
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir / "lock"):
        if not (run_dir / "summary.json").exists():
            text = json.dumps(key, indent=1, sort_keys=True)
            atomic_write(run_dir / "key.json", lambda p: p.write_text(text))
            with cpu_training():
                train(run_dir, run)
    return tuned_from(run_dir, name)


def tuned_from(run_dir: Path, name: str) -> Tuned:
    """A finished run's checkpoint, head and summary."""
    summary = json.loads((run_dir / "summary.json").read_text())
    with np.load(run_dir / "head.npz") as head:
        weight, bias = head["weight"], head["bias"]
    tuned = run_dir / "tuned.pt"
    return Tuned(Checkpoint(name, str(tuned), file_sha256(tuned)), (weight, bias), summary)
