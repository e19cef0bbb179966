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

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from harness.backbones.files import file_sha256
from harness.cache import atomic_write, digest
from harness.embeddings import Checkpoint, model_key
from harness.paths import may_write
from harness.runtime import cpu_training, device, torch_paths, training_threads
from harness.training import Run, train

# Bump when training changes in a way the key's settings do not show.
FINETUNE_VERSION = 2


@dataclass(frozen=True)
class Tuned:
    """A finished run: the checkpoint to embed with, the head it trained, what it cost."""

    checkpoint: Checkpoint
    head: tuple[np.ndarray, np.ndarray]
    summary: dict[str, Any]


def run_key(run: Run) -> dict[str, object]:
    """Everything that decides what ``run`` trains: its folder's name is this digest."""
    return {
        **model_key(run.spec, run.weights, device()),
        "finetune_version": FINETUNE_VERSION,
        "dataset": run.dataset.name,
        "dataset_fingerprint": run.dataset.fingerprint,
        "split": "train",
        "items_sha256": digest({"items": run.indices.astype(int).tolist()}),
        "preprocess": run.pre.as_dict(),
        "blocks": run.blocks,
        # What training learns depends on the CPU thread count (not on xdist workers).
        "cpu_threads": training_threads() if device() == "cpu" else None,
        "torch_paths": torch_paths(),  # bf16 autocast (with amp) and the fused optimiser
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in run.settings.items()},
        **optional(run),
    }


def optional(run: Run) -> dict[str, str]:
    """The key's record of the items a run validates on each epoch and of the head it
    starts from, where it has them (a run without them keeps the key it always had)."""
    key = {}
    if run.validation is not None:
        key["validation_sha256"] = digest({"items": run.validation.astype(int).tolist()})
    if run.head is not None:
        arrays = b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in run.head)
        key["head_sha256"] = hashlib.sha256(arrays).hexdigest()
    return key


def finetune(run: Run, cache_root: Path) -> Tuned:
    """The fine-tuned backbone of ``run``: read if finished, resumed if interrupted,
    trained otherwise (one process at a time per run); under a read-only cache, trained
    in a scratch folder for this run only."""
    run_dir, _ = advance(run, cache_root)
    return tuned_from(run_dir, digest(run_key(run)))


def advance(run: Run, cache_root: Path, until: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Train ``run`` to epoch ``until`` (None: to its end), resuming its checkpoint; its
    folder and the state it reached (``epoch``, ``history``, ``seconds`` of training so
    far and ``epoch_seconds``). A pilot stops at ``until`` and a later call resumes it
    where it stopped; a finished run is read, whatever ``until`` asks."""
    key = run_key(run)
    name = digest(key)
    run_dir = cache_root / "finetune" / name[:2] / name
    if not may_write(run_dir / "lock"):  # a read-only cache: a finished run, or one for now
        if (run_dir / "summary.json").exists():
            return run_dir, finished(run_dir)
        run_dir = scratch.setdefault(name, Path(tempfile.mkdtemp(prefix="shelfbench-finetune-")))
        with cpu_training():
            return run_dir, train(run_dir, run, until)
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir / "lock"):
        if (run_dir / "summary.json").exists():
            return run_dir, finished(run_dir)
        text = json.dumps(key, indent=1, sort_keys=True)
        atomic_write(run_dir / "key.json", lambda p: p.write_text(text))
        with cpu_training():
            return run_dir, train(run_dir, run, until)


# Runs trained outside a read-only cache, by key digest: a resumed pilot finds its folder.
scratch: dict[str, Path] = {}


def finished(run_dir: Path) -> dict[str, Any]:
    """A finished run's state, as ``train`` returns it."""
    summary = json.loads((run_dir / "summary.json").read_text())
    epochs = summary["epochs"]
    # A run finished before epochs were timed one by one: its seconds, shared out evenly.
    even = [summary["seconds"] / max(1, epochs)] * epochs
    return {
        "epoch": epochs,
        "history": summary["history"],
        "seconds": summary["seconds"],
        "epoch_seconds": summary.get("epoch_seconds", even),
    }


def tuned_from(run_dir: Path, name: str) -> Tuned:
    """A finished run's checkpoint, head and summary."""
    summary = json.loads((run_dir / "summary.json").read_text())
    with np.load(run_dir / "head.npz") as head:
        weight, bias = head["weight"], head["bias"]
    tuned = run_dir / "tuned.pt"
    return Tuned(Checkpoint(name, str(tuned), file_sha256(tuned)), (weight, bias), summary)
