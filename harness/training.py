"""The training loop of a fine-tuning run (``harness.finetune``): the backbone with a
linear head, AdamW with warmup and cosine decay, one checkpoint per epoch, resumable.
Every epoch draws its order, augmentation and dropout from seeds derived from
``(seed, epoch)``, so a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field

from harness.augment import train_batches
from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.files import ResolvedWeights
from harness.backbones.libraries import library
from harness.cache import atomic_write
from harness.datasets.base import Dataset
from harness.errors import DatasetError, SuiteError, TrainingError
from harness.extract import Loaded, load_batches, to_tensor
from harness.progress import progress_bar
from harness.runtime import device, torch_paths
from harness.settings import Count, CropRange, Positive, Seed, Table, Tolerance, Unit

if TYPE_CHECKING:
    import torch


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
    # batch: a trained block's batch norms normalise by each batch and update their running
    # statistics; frozen: every batch norm keeps its pretrained statistics, which keeps a
    # small target set far from the pretraining images (LP-FT's head stays valid; see
    # benchmarks/adaptive.py) from replacing them after a few steps.
    norm: Literal["batch", "frozen"] = "batch"
    seed: Seed = 0


TRAIN_DEFAULTS: dict[str, Any] = TrainSettings().model_dump()


@dataclass(frozen=True)
class Run:
    """What a run trains: the backbone (all of it, or its last ``blocks`` blocks) on the
    ``indices`` items of the dataset's train split, with ``params``' training settings.
    An unreadable image is skipped, or with ``skip_unreadable`` false stops the run.
    ``validation``: train items held out, whose accuracy under the head each epoch logs.
    ``head``: the head's starting weights and bias (LP-FT: a linear probe's), else seeded
    random ones."""

    dataset: Dataset
    indices: np.ndarray
    spec: BackboneSpec
    weights: ResolvedWeights
    pre: Preprocess
    blocks: int | None
    params: Mapping[str, Any]
    skip_unreadable: bool = True
    validation: np.ndarray | None = None
    head: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return {k: self.params[k] for k in TRAIN_DEFAULTS}


# Steps between reads of the running loss (each read waits for the GPU to catch up).
SYNC_STEPS = 20


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


@dataclass
class Trainer:
    """A run's model, head and optimiser, and what its steps need to know."""

    run: Run
    model: torch.nn.Module
    head: torch.nn.Linear
    net: torch.nn.Sequential
    optimiser: torch.optim.Optimizer
    base_lrs: list[float]
    trained: list[Any]  # the backbone's trainable parameters
    frozen_norms: Sequence[torch.nn.Module]
    smallest: int  # a batch norm that trains cannot normalise one image: skip such batches
    steps: int  # per epoch
    amp: bool

    def where(self, epoch: int, step: int) -> str:
        run, settings = self.run, self.run.settings
        return (
            f"{describe(run)} (epoch {epoch + 1}, by step {step}; "
            f"lr {settings['lr']:g}, head_lr {settings['head_lr']:g})"
        )


def describe(run: Run) -> str:
    """What the run trains, for progress bars and errors."""
    what = "finetune" if run.blocks is None else f"partial:{run.blocks}"
    return f"{what} {run.spec.name} on {run.dataset.name}"


def trainer(run: Run) -> Trainer:
    """The run's backbone with a new head (seeded), on the device, and its optimiser."""
    import torch

    from harness.backbones.build import build_model, width

    settings = run.settings
    model = build_model(run.spec, run.weights)
    torch.manual_seed(settings["seed"])
    head = torch.nn.Linear(width(model), len(run.dataset.classes))
    if run.head is not None:
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(run.head[0]))
            head.bias.copy_(torch.from_numpy(run.head[1]))
    trained = trainable(model, run.spec, run.blocks)
    net = torch.nn.Sequential(model, head).to(device(), memory_format=torch.channels_last)  # type: ignore[call-overload]
    groups = [
        {
            "params": [p for p in trained if p.ndim > 1],
            "lr": settings["lr"],
            "weight_decay": settings["weight_decay"],
        },
        {"params": [p for p in trained if p.ndim <= 1], "lr": settings["lr"], "weight_decay": 0.0},
        {"params": list(head.parameters()), "lr": settings["head_lr"], "weight_decay": 0.0},
    ]
    # One fused kernel per step (on CUDA; CI runs it on the CPU) instead of one per list.
    optimiser = torch.optim.AdamW([g for g in groups if g["params"]], fused=torch_paths())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    frozen = [
        m
        for m in norms
        if settings["norm"] == "frozen" or not any(p.requires_grad for p in m.parameters())
    ]
    return Trainer(
        run,
        model,
        head,
        net,
        optimiser,
        [g["lr"] for g in optimiser.param_groups],
        trained,
        frozen,
        2 if len(frozen) < len(norms) else 1,
        math.ceil(len(run.indices) / settings["batch_size"]),
        torch_paths() and settings["amp"],
    )


def resume(run_dir: Path, t: Trainer) -> dict[str, Any]:
    """The state of the run's last finished epoch (loaded into ``t``), or a fresh one."""
    import torch

    done = sorted(run_dir.glob("epoch-*.pt"))
    if not done:
        return {"epoch": 0, "history": [], "seconds": 0.0, "epoch_seconds": [],
                "images_seen": 0, "unreadable": []}  # fmt: skip
    state: dict[str, Any] = torch.load(done[-1], map_location=device(), weights_only=True)
    t.net.load_state_dict(state.pop("model"))
    t.optimiser.load_state_dict(state.pop("optimizer"))
    return state


def step(t: Trainer, loaded: Loaded, labels: torch.Tensor, factor: float, tally: Tally) -> None:
    """One optimiser step on a batch, at ``factor`` times the base learning rates."""
    import torch
    import torch.nn.functional as F

    dev, settings = device(), t.run.settings
    x = to_tensor(loaded.pixels(dev), t.run.pre, dev)
    y = labels[loaded.rows].to(dev, non_blocking=True)
    for group, base in zip(t.optimiser.param_groups, t.base_lrs, strict=True):
        group["lr"] = base * factor
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=t.amp):
        logits = t.net(x).float()
    loss = F.cross_entropy(logits, y, label_smoothing=settings["label_smoothing"])
    t.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(
        [p for g in t.optimiser.param_groups for p in g["params"]], settings["clip_grad"]
    )
    t.optimiser.step()
    tally.add(loss, logits, y)


def epoch(t: Trainer, number: int, unreadable: set[int]) -> tuple[Tally, float]:
    """Train epoch ``number`` (from 0); the epoch's tally and mean loss. Unreadable
    items are added to ``unreadable`` (or stop the run if it may not skip them)."""
    import torch

    run, settings = t.run, t.run.settings
    data = run.dataset.split("train")
    labels = torch.tensor(data.labels, dtype=torch.long)
    total = settings["epochs"] * t.steps
    warmup = max(1, round(settings["warmup"] * total))
    order = np.random.default_rng([settings["seed"], number]).permutation(len(run.indices))
    torch.manual_seed(settings["seed"] * 100_003 + number)
    t.net.train()
    for m in t.frozen_norms:  # frozen blocks keep their running statistics
        m.eval()
    tally = Tally(device())
    desc = f"{describe(run)}, epoch {number + 1}/{settings['epochs']}"
    bar = progress_bar(desc, "img", len(order))
    with bar:
        batches = train_batches(data, run.indices, run.pre, settings, order, number)
        for i, loaded in enumerate(batches):
            if loaded.bad and not run.skip_unreadable:
                raise DatasetError(next(iter(loaded.bad.values())))
            unreadable.update(loaded.bad)
            bar.update(len(loaded.rows) + len(loaded.bad))
            if len(loaded.rows) < t.smallest:
                continue
            step(t, loaded, labels, learning_rate(number * t.steps + i, total, warmup), tally)
            if (i + 1) % SYNC_STEPS == 0:
                mean = tally.mean_loss(t.where(number, i + 1))
                bar.set_postfix(loss=f"{mean:.3f}", refresh=False)
        if not tally.seen:
            raise DatasetError(
                f"{run.dataset.name}: none of the {len(order)} train images could be read"
            )
        return tally, tally.mean_loss(t.where(number, t.steps))  # waits for the last step


# Training steps timed (after one to warm up) to estimate what a run will cost.
TIMED_STEPS = 3


def step_seconds(run: Run) -> tuple[float, float]:
    """Seconds per image of a training step and of a validation forward pass, timed on a
    few of the run's own first batches by a throwaway trainer (no checkpoint is touched)."""
    import torch

    t = trainer(run)
    settings, dev = run.settings, device()
    labels = torch.tensor(run.dataset.split("train").labels, dtype=torch.long)
    order = np.random.default_rng([settings["seed"], 0]).permutation(len(run.indices))
    batches = train_batches(run.dataset.split("train"), run.indices, run.pre, settings, order, 0)
    tally, seen, start = Tally(dev), 0, 0.0
    t.net.train()
    for i, loaded in enumerate(batches):
        if i == 1:
            tally.mean_loss(t.where(0, 1))  # waits for the warm-up step
            start = time.perf_counter()
        if len(loaded.rows) >= t.smallest:
            step(t, loaded, labels, 1.0, tally)
            seen += len(loaded.rows) if i else 0
        if i == TIMED_STEPS:
            break
    tally.mean_loss(t.where(0, TIMED_STEPS))
    train = (time.perf_counter() - start) / max(1, seen)
    t.net.eval()
    x = to_tensor(loaded.pixels(dev), run.pre, dev)
    with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=t.amp):
        start = time.perf_counter()
        float(t.net(x).sum())
    return train, (time.perf_counter() - start) / len(x)


def validate(t: Trainer) -> float:
    """The head's accuracy on the run's held-out ``validation`` items (no augmentation)."""
    import torch

    run, dev = t.run, device()
    assert run.validation is not None
    data = run.dataset.split("train")
    correct = seen = 0
    t.net.eval()
    size = run.settings["batch_size"]
    with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=t.amp):
        for loaded in load_batches(data, run.validation, run.pre, size):
            if len(loaded.rows):
                logits = t.net(to_tensor(loaded.pixels(dev), run.pre, dev))
                truth = torch.as_tensor(data.labels[loaded.rows], device=dev)
                correct += int((logits.argmax(1) == truth).sum())
                seen += len(loaded.rows)
    return correct / max(1, seen)


def train(run_dir: Path, run: Run, until: int | None = None) -> dict[str, Any]:
    """Train (or resume) ``run`` in ``run_dir`` to epoch ``until`` (None: its last, then
    write its results); the state it reached (epochs done, history, seconds in all and
    per epoch)."""
    t = trainer(run)
    state = resume(run_dir, t)
    unreadable = set(state["unreadable"])
    last = run.settings["epochs"] if until is None else min(until, run.settings["epochs"])
    for number in range(state["epoch"], last):
        start = time.perf_counter()
        tally, mean = epoch(t, number, unreadable)
        logged = {"epoch": number + 1, "loss": mean, "train_accuracy": tally.accuracy()}
        if run.validation is not None:
            logged["validation_accuracy"] = validate(t)
        spent = time.perf_counter() - start
        state["seconds"] += spent
        state["epoch_seconds"] = [*state.get("epoch_seconds", []), spent]
        state["history"].append(logged)
        state["epoch"] = number + 1
        state["images_seen"] += tally.seen
        state["unreadable"] = sorted(unreadable)
        save_checkpoint(
            run_dir, {**state, "model": t.net.state_dict(), "optimizer": t.optimiser.state_dict()}
        )
    if state["epoch"] == run.settings["epochs"]:
        finish(run_dir, t, state)
    return state


def finish(run_dir: Path, t: Trainer, state: dict[str, Any]) -> None:
    """Keep the tuned backbone, its head and the run's summary; drop the checkpoints."""
    import torch

    def save_head(path: Path) -> None:
        with path.open("wb") as f:
            np.savez(
                f,
                weight=t.head.weight.detach().float().cpu().numpy(),
                bias=t.head.bias.detach().float().cpu().numpy(),
            )

    atomic_write(run_dir / "tuned.pt", lambda p: torch.save(t.model.state_dict(), p))
    atomic_write(run_dir / "head.npz", save_head)
    summary = {
        "epochs": state["epoch"],
        "history": state["history"],
        "seconds": state["seconds"],
        "epoch_seconds": state.get("epoch_seconds", []),
        "images_seen": state["images_seen"],
        "unreadable": len(state["unreadable"]),
        "trainable_params": sum(p.numel() for p in t.trained)
        + sum(p.numel() for p in t.head.parameters()),
        "backbone_params": sum(p.numel() for p in image_model(t.model, t.run.spec).parameters()),
        "blocks": t.run.blocks,
        "device": device(),
        "amp": "bfloat16" if t.amp else None,
    }
    text = json.dumps(summary, indent=1)
    atomic_write(run_dir / "summary.json", lambda p: p.write_text(text))
    for old in run_dir.glob("epoch-*.pt"):
        old.unlink()
