"""Fine-tuning a backbone with a linear classification head, resumable epoch by epoch.

A run lives in ``<cache>/finetune/<digest of its key>/``. Its key is the model side of the
embedding cache key plus the training data (dataset fingerprint, the exact train items),
the preprocessing, the trainable blocks and every training setting, so a changed config
starts a new run and never resumes a stale one. After each epoch the run writes a
checkpoint (model, optimiser, history, compute seconds) atomically; an interrupted run
resumes from the last one. Every epoch draws its order, augmentation and dropout from
seeds derived from ``(seed, epoch)``, so a resumed run ends where an uninterrupted one
does. When training ends the run keeps ``tuned.pt`` (backbone weights, hashed into the
embedding key), ``head.npz`` and ``summary.json``, and drops the epoch checkpoints.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from filelock import FileLock
from PIL import Image
from pydantic import Field

from harness import resize
from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.libraries import library
from harness.backbones.weights import ResolvedWeights, file_sha256
from harness.cache import atomic_write, digest
from harness.datasets.base import ArraySplit, Dataset, Split
from harness.embeddings import Checkpoint, model_key
from harness.errors import DatasetError, SuiteError, TrainingError
from harness.extract import (
    RESAMPLE,
    Items,
    Loaded,
    chunks,
    in_memory,
    loader,
    progress,
    to_tensor,
    transform_item,
)
from harness.runtime import cpu_training, device, training_threads
from harness.settings import Count, CropRange, Positive, Seed, Table, Tolerance, Unit

if TYPE_CHECKING:
    import torch

# Bump when training changes in a way the key's settings do not show.
FINETUNE_VERSION = 2

# Steps between reads of the running loss (each read waits for the GPU to catch up).
SYNC_STEPS = 20


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


def crop(
    width: int, height: int, rng: np.random.Generator, scale: Any
) -> tuple[tuple[int, int, int, int], bool]:
    """A random resized crop's box (area ``scale``, aspect 3/4-4/3; the whole image after
    ten misses) and whether to flip it: the light augmentation of ImageNet fine-tuning."""
    box = (0, 0, width, height)
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= width and 0 < ch <= height:
            left = int(rng.integers(0, width - cw + 1))
            top = int(rng.integers(0, height - ch + 1))
            box = (left, top, left + cw, top + ch)
            break
    return box, bool(rng.random() < 0.5)


def augment(
    image: Image.Image, pre: Preprocess, rng: np.random.Generator, scale: Any
) -> np.ndarray:
    """``crop``'s box resized to ``pre.size``, flipped if it says so."""
    box, flip = crop(*image.size, rng, scale)
    out = image.resize((pre.size, pre.size), RESAMPLE[pre.interpolation], box=box)
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out)


def item_rng(seed: int, epoch: int, item: int) -> np.random.Generator:
    """The random draws of one item's augmentation in one epoch: the same whatever the
    batch, the order or the number of loader workers."""
    return np.random.default_rng([seed, epoch, 1, item])


def trainable(model: torch.nn.Module, spec: BackboneSpec, blocks: int | None) -> list[Any]:
    """Mark what trains (all of the image model, or its last ``blocks`` blocks and what
    follows them, as the model library defines blocks) and return those parameters."""
    model.requires_grad_(False)
    lib = library(spec)
    if blocks is None:
        lib.image_model(model).requires_grad_(True)
    elif lib.unfreeze is None:
        raise SuiteError(
            f"partial:{blocks}: {spec.name} is not a timm or open_clip model, so its blocks "
            "are unknown; fine-tune all of it (finetune) instead"
        )
    else:
        lib.unfreeze(model, spec, blocks)
    return [p for p in model.parameters() if p.requires_grad]


def image_model(model: torch.nn.Module, spec: BackboneSpec) -> torch.nn.Module:
    """The part of ``model`` that embeds images (an open_clip model's visual tower)."""
    return library(spec).image_model(model)


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
            "settings": {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()
            },
        }


def finetune(run: Run, cache_root: Path) -> Tuned:
    """The fine-tuned backbone of ``run``: read if finished, resumed if interrupted,
    trained otherwise (one process at a time per run)."""
    key = run.key()
    name = digest(key)
    run_dir = cache_root / "finetune" / name[:2] / name
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir / "lock"):
        if not (run_dir / "summary.json").exists():
            text = json.dumps(key, indent=1, sort_keys=True)
            atomic_write(run_dir / "key.json", lambda p: p.write_text(text))
            with cpu_training():
                train(run_dir, run)
    summary = json.loads((run_dir / "summary.json").read_text())
    with np.load(run_dir / "head.npz") as head:
        weight, bias = head["weight"], head["bias"]
    tuned = run_dir / "tuned.pt"
    return Tuned(Checkpoint(name, str(tuned), file_sha256(tuned)), (weight, bias), summary)


def learning_rate(step: int, total: int, warmup: int) -> float:
    """The schedule's factor: linear warmup over ``warmup`` steps, then cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write epoch ``state["epoch"]``'s checkpoint atomically, then drop older ones."""
    import torch

    path = run_dir / f"epoch-{state['epoch']:04d}.pt"
    atomic_write(path, lambda p: torch.save(state, p))
    for old in run_dir.glob("epoch-*.pt"):
        if old != path:
            old.unlink()


def _augment(
    image: Image.Image, item: int, pre: Preprocess, seed: int, epoch: int, scale: Any
) -> np.ndarray:
    return augment(image, pre, item_rng(seed, epoch, item), scale)


def train_batches(run: Run, data: Split, order: np.ndarray, epoch: int) -> Iterable[Loaded]:
    """Epoch ``epoch``'s batches of train items, in ``order`` (positions in
    ``run.indices``). Files are decoded and augmented by the loader's workers; images held
    in memory at one size are cropped, resized and flipped on the device, bit for bit as
    ``augment`` would, with weights drawn here."""
    settings, pre = run.settings, run.pre
    positions = [order[c].tolist() for c in chunks(len(order), settings["batch_size"])]
    if isinstance(data, ArraySplit):
        return _array_batches(data, [run.indices[p] for p in positions], pre, settings, epoch)
    prepare = (
        functools.partial(
            _augment, pre=pre, seed=settings["seed"], epoch=epoch, scale=settings["crop_scale"]
        )
        if settings["augment"]
        else functools.partial(transform_item, pre=pre)
    )
    return loader(Items(data, run.indices, prepare), positions)


def _array_batches(
    data: ArraySplit,
    batches: list[np.ndarray],
    pre: Preprocess,
    settings: Mapping[str, Any],
    epoch: int,
) -> Iterator[Loaded]:
    height, width = data.images.shape[1:3]
    resizing = resize.plan(height, width, pre)
    for items in batches:
        if settings["augment"]:
            drawn = [
                crop(
                    width, height, item_rng(settings["seed"], epoch, int(i)), settings["crop_scale"]
                )
                for i in items
            ]
            boxes = np.array([box for box, _ in drawn], dtype=np.float64)
            flips = np.array([flip for _, flip in drawn], dtype=bool)
            resizing = resize.boxed(height, width, pre, boxes, flips)
        yield in_memory(data, items, resizing)


class Tally:
    """An epoch's loss and accuracy, summed on the device: reading them waits for the GPU
    to catch up, so the loop reads every ``SYNC_STEPS`` steps, not every step."""

    def __init__(self, dev: str) -> None:
        import torch

        self.loss = torch.zeros((), dtype=torch.float64, device=dev)
        self.correct = torch.zeros((), dtype=torch.int64, device=dev)
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += loss.detach().double() * len(labels)
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.seen += len(labels)

    def mean_loss(self, where: str) -> float:
        """The mean loss so far; a run whose loss is not finite stops here."""
        mean = self.loss.item() / max(1, self.seen)
        if not math.isfinite(mean):
            raise TrainingError(f"{where} diverged: the mean loss is {mean}; lower lr or head_lr")
        return mean

    def accuracy(self) -> float:
        return self.correct.item() / max(1, self.seen)


def train(run_dir: Path, run: Run) -> None:
    """Train (or resume) ``run`` in ``run_dir`` to its last epoch and write its results."""
    import torch
    import torch.nn.functional as F

    from harness.backbones.build import build_model, width

    dataset, indices, spec, pre, blocks = run.dataset, run.indices, run.spec, run.pre, run.blocks
    settings = run.settings

    dev = device()
    seed = settings["seed"]
    model = build_model(spec, run.weights)
    torch.manual_seed(seed)
    head = torch.nn.Linear(width(model), len(dataset.classes))
    backbone_params = trainable(model, spec, blocks)
    net = torch.nn.Sequential(model, head).to(dev, memory_format=torch.channels_last)  # type: ignore[call-overload]
    decay = [p for p in backbone_params if p.ndim > 1]
    no_decay = [p for p in backbone_params if p.ndim <= 1]
    groups = [
        {"params": decay, "lr": settings["lr"], "weight_decay": settings["weight_decay"]},
        {"params": no_decay, "lr": settings["lr"], "weight_decay": 0.0},
        {"params": list(head.parameters()), "lr": settings["head_lr"], "weight_decay": 0.0},
    ]
    optimiser = torch.optim.AdamW([g for g in groups if g["params"]])
    base_lrs = [g["lr"] for g in optimiser.param_groups]

    state: dict[str, Any] = {
        "epoch": 0,
        "history": [],
        "seconds": 0.0,
        "images_seen": 0,
        "unreadable": [],
    }
    done = sorted(run_dir.glob("epoch-*.pt"))
    if done:
        state = torch.load(done[-1], map_location=dev, weights_only=True)
        net.load_state_dict(state.pop("model"))
        optimiser.load_state_dict(state.pop("optimizer"))

    data = dataset.split("train")
    labels = torch.tensor(data.labels, dtype=torch.long)
    batch = settings["batch_size"]
    steps = math.ceil(len(indices) / batch)
    total = settings["epochs"] * steps
    warmup = max(1, round(settings["warmup"] * total))
    amp = dev == "cuda" and settings["amp"]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    frozen_norms = [m for m in norms if not any(p.requires_grad for p in m.parameters())]
    # A batch norm that trains cannot normalise one image: such a model skips a batch of one.
    smallest = 2 if len(frozen_norms) < len(norms) else 1
    what = "finetune" if blocks is None else f"partial:{blocks}"

    def where(epoch: int, step: int) -> str:
        return (
            f"{what} {spec.name} on {dataset.name} (epoch {epoch + 1}, by step {step}; "
            f"lr {settings['lr']:g}, head_lr {settings['head_lr']:g})"
        )

    unreadable = set(state["unreadable"])
    for epoch in range(state["epoch"], settings["epochs"]):
        start = time.perf_counter()
        order = np.random.default_rng([seed, epoch]).permutation(len(indices))
        torch.manual_seed(seed * 100_003 + epoch)
        net.train()
        for m in frozen_norms:  # frozen blocks keep their running statistics
            m.eval()
        tally = Tally(dev)
        bar = progress(
            len(order),
            f"{what} {spec.name} on {dataset.name}, epoch {epoch + 1}/{settings['epochs']}",
        )
        with bar:
            for i, loaded in enumerate(train_batches(run, data, order, epoch)):
                if loaded.bad and not run.skip_unreadable:
                    raise DatasetError(next(iter(loaded.bad.values())))
                unreadable.update(loaded.bad)
                rows = loaded.rows
                bar.update(len(rows) + len(loaded.bad))
                if len(rows) < smallest:
                    continue
                x = to_tensor(loaded.pixels(dev), pre, dev)
                y = labels[rows].to(dev, non_blocking=True)
                factor = learning_rate(epoch * steps + i, total, warmup)
                for group, base in zip(optimiser.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    logits = net(x).float()
                loss = F.cross_entropy(logits, y, label_smoothing=settings["label_smoothing"])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [p for g in optimiser.param_groups for p in g["params"]],
                    settings["clip_grad"],
                )
                optimiser.step()
                tally.add(loss, logits, y)
                if (i + 1) % SYNC_STEPS == 0:
                    mean = tally.mean_loss(where(epoch, i + 1))
                    bar.set_postfix(loss=f"{mean:.3f}", refresh=False)
            if not tally.seen:
                raise DatasetError(
                    f"{dataset.name}: none of the {len(order)} train images could be read"
                )
            mean = tally.mean_loss(where(epoch, steps))  # waits for the last step
        state["seconds"] += time.perf_counter() - start
        state["history"].append(
            {"epoch": epoch + 1, "loss": mean, "train_accuracy": tally.accuracy()}
        )
        state["epoch"] = epoch + 1
        state["images_seen"] += tally.seen
        state["unreadable"] = sorted(unreadable)
        save_checkpoint(
            run_dir, {**state, "model": net.state_dict(), "optimizer": optimiser.state_dict()}
        )

    def save_head(path: Path) -> None:
        with path.open("wb") as f:
            np.savez(
                f,
                weight=head.weight.detach().float().cpu().numpy(),
                bias=head.bias.detach().float().cpu().numpy(),
            )

    atomic_write(run_dir / "tuned.pt", lambda p: torch.save(model.state_dict(), p))
    atomic_write(run_dir / "head.npz", save_head)
    summary = {
        "epochs": state["epoch"],
        "history": state["history"],
        "seconds": state["seconds"],
        "images_seen": state["images_seen"],
        "unreadable": len(unreadable),
        "trainable_params": sum(p.numel() for p in backbone_params)
        + sum(p.numel() for p in head.parameters()),
        "backbone_params": sum(p.numel() for p in image_model(model, spec).parameters()),
        "blocks": blocks,
        "device": dev,
        "amp": "bfloat16" if amp else None,
    }
    text = json.dumps(summary, indent=1)
    atomic_write(run_dir / "summary.json", lambda p: p.write_text(text))
    for old in run_dir.glob("epoch-*.pt"):
        old.unlink()
