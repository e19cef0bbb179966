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

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock
from PIL import Image

from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.weights import ResolvedWeights, file_sha256
from harness.cache import atomic_write, digest
from harness.datasets.base import Dataset
from harness.embeddings import Checkpoint, model_key
from harness.errors import SuiteError
from harness.extract import RESAMPLE, cpu_threads, device, progress, to_tensor, transform

if TYPE_CHECKING:
    import torch

# Bump when training changes in a way the key's settings do not show.
FINETUNE_VERSION = 1

# The settings of a run, with their defaults: all go into the run's key.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 3,
    "batch_size": 32,
    "lr": 1e-4,
    "head_lr": 1e-3,
    "weight_decay": 0.05,
    "warmup": 0.1,
    "label_smoothing": 0.1,
    "clip_grad": 1.0,
    "augment": True,
    "crop_scale": (0.35, 1.0),
    "amp": True,
    "seed": 0,
}


@dataclass(frozen=True)
class Tuned:
    """A finished run: the checkpoint to embed with, the head it trained, what it cost."""

    checkpoint: Checkpoint
    head: tuple[np.ndarray, np.ndarray]
    summary: dict[str, Any]


def augment(
    image: Image.Image, pre: Preprocess, rng: np.random.Generator, scale: Any
) -> np.ndarray:
    """Random resized crop (area ``scale``, aspect 3/4-4/3) to ``pre.size``, then a
    horizontal flip half the time: the light augmentation of ImageNet fine-tuning."""
    w, h = image.size
    box = (0, 0, w, h)
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            box = (left, top, left + cw, top + ch)
            break
    out = image.resize((pre.size, pre.size), RESAMPLE[pre.interpolation], box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out)


def trainable(model: torch.nn.Module, spec: BackboneSpec, blocks: int | None) -> list[Any]:
    """Mark what trains (all of the image model, or its last ``blocks`` blocks and what
    follows them) and return those parameters. Blocks are timm's coarse parameter groups
    (the groups of its layer-wise decay) and open_clip's ViT residual blocks."""
    model.requires_grad_(False)
    image = image_model(model, spec)
    if blocks is None:
        image.requires_grad_(True)
    elif spec.source == "open_clip":
        if not hasattr(image, "transformer"):
            raise SuiteError(f"partial:{blocks}: {spec.name}'s image tower is not a ViT")
        _check_blocks(spec, blocks, len(image.transformer.resblocks))
        # open_clip's own lock: its groups are the stem, each block and the projection,
        # the last block's group also holding the final norm.
        image.lock(unlocked_groups=blocks + 1)
    else:
        from timm.models import group_parameters

        # Group 0 is the stem; timm folds what follows the last block into its group.
        groups = list(group_parameters(model, model.group_matcher(coarse=True)).values())
        _check_blocks(spec, blocks, len(groups) - 1)
        names = {n for group in groups[-blocks:] for n in group}
        for name, p in model.named_parameters():
            p.requires_grad = name in names
    return [p for p in model.parameters() if p.requires_grad]


def image_model(model: torch.nn.Module, spec: BackboneSpec) -> torch.nn.Module:
    """The part of ``model`` that embeds images (an open_clip model's visual tower)."""
    return model.clip.visual if spec.source == "open_clip" else model


def _check_blocks(spec: BackboneSpec, blocks: int, available: int) -> None:
    if not 1 <= blocks <= available:
        raise SuiteError(
            f"partial:{blocks}: {spec.name} has {available} blocks; use 1..{available}"
        )


def run_key(
    dataset: Dataset,
    indices: np.ndarray,
    spec: BackboneSpec,
    weights: ResolvedWeights,
    pre: Preprocess,
    blocks: int | None,
    settings: Mapping[str, Any],
) -> dict[str, object]:
    return {
        **model_key(spec, weights, device()),
        "finetune_version": FINETUNE_VERSION,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "split": "train",
        "items_sha256": digest({"items": indices.astype(int).tolist()}),
        "preprocess": pre.as_dict(),
        "blocks": blocks,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
    }


def finetune(
    dataset: Dataset,
    n_classes: int,
    indices: np.ndarray,
    spec: BackboneSpec,
    weights: ResolvedWeights,
    pre: Preprocess,
    blocks: int | None,
    params: Mapping[str, Any],
    cache_root: Path,
) -> Tuned:
    """The fine-tuned backbone for these train items and settings: read if finished,
    resumed if interrupted, trained otherwise (one process at a time per run)."""
    settings = {k: params[k] for k in TRAIN_DEFAULTS}
    key = run_key(dataset, indices, spec, weights, pre, blocks, settings)
    name = digest(key)
    run_dir = cache_root / "finetune" / name[:2] / name
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir / "lock"):
        if not (run_dir / "summary.json").exists():
            text = json.dumps(key, indent=1, sort_keys=True)
            atomic_write(run_dir / "key.json", lambda p: p.write_text(text))
            train(run_dir, dataset, n_classes, indices, spec, weights, pre, blocks, settings)
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


def train(
    run_dir: Path,
    dataset: Dataset,
    n_classes: int,
    indices: np.ndarray,
    spec: BackboneSpec,
    weights: ResolvedWeights,
    pre: Preprocess,
    blocks: int | None,
    settings: Mapping[str, Any],
) -> None:
    """Train (or resume) the run in ``run_dir`` to its last epoch and write its results."""
    import torch
    import torch.nn.functional as F

    from harness.backbones.build import build_model

    torch.set_num_threads(cpu_threads())
    dev = device()
    seed = settings["seed"]
    model = build_model(spec, weights)
    torch.manual_seed(seed)
    head = torch.nn.Linear(spec.embed_dim, n_classes)
    backbone_params = trainable(model, spec, blocks)
    net = torch.nn.Sequential(model, head).to(dev, memory_format=torch.channels_last)
    decay = [p for p in backbone_params if p.ndim > 1]
    no_decay = [p for p in backbone_params if p.ndim <= 1]
    groups = [
        {"params": decay, "lr": settings["lr"], "weight_decay": settings["weight_decay"]},
        {"params": no_decay, "lr": settings["lr"], "weight_decay": 0.0},
        {"params": list(head.parameters()), "lr": settings["head_lr"], "weight_decay": 0.0},
    ]
    optimiser = torch.optim.AdamW([g for g in groups if g["params"]])
    base_lrs = [g["lr"] for g in optimiser.param_groups]

    state: dict[str, Any] = {"epoch": 0, "history": [], "seconds": 0.0}
    done = sorted(run_dir.glob("epoch-*.pt"))
    if done:
        state = torch.load(done[-1], map_location=dev, weights_only=True)
        net.load_state_dict(state.pop("model"))
        optimiser.load_state_dict(state.pop("optimizer"))

    data = dataset.split("train")
    labels = torch.from_numpy(data.labels[indices]).long()
    batch = settings["batch_size"]
    steps = math.ceil(len(indices) / batch)
    total = settings["epochs"] * steps
    warmup = max(1, round(settings["warmup"] * total))
    amp = dev == "cuda" and settings["amp"]
    frozen_norms = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and not any(p.requires_grad for p in m.parameters())
    ]
    for epoch in range(state["epoch"], settings["epochs"]):
        start = time.perf_counter()
        order = np.random.default_rng([seed, epoch]).permutation(len(indices))
        rng = np.random.default_rng([seed, epoch, 1])
        torch.manual_seed(seed * 100_003 + epoch)
        net.train()
        for m in frozen_norms:  # frozen blocks keep their running statistics
            m.eval()
        loss_sum, correct = 0.0, 0
        bar = progress(
            len(order),
            f"finetune {spec.name} on {dataset.name}, epoch {epoch + 1}/{settings['epochs']}",
        )
        with bar:
            for i, first in enumerate(range(0, len(order), batch)):
                rows = order[first : first + batch]
                images = [
                    augment(data.image(int(indices[r])), pre, rng, settings["crop_scale"])
                    if settings["augment"]
                    else transform(data.image(int(indices[r])), pre)
                    for r in rows
                ]
                x = to_tensor(images, pre).to(dev, non_blocking=True)
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
                loss_sum += loss.detach().item() * len(rows)
                correct += int((logits.detach().argmax(1) == y).sum())
                bar.set_postfix(loss=f"{loss_sum / (first + len(rows)):.3f}", refresh=False)
                bar.update(len(rows))
        state["seconds"] += time.perf_counter() - start
        state["history"].append(
            {
                "epoch": epoch + 1,
                "loss": loss_sum / len(order),
                "train_accuracy": correct / len(order),
            }
        )
        state["epoch"] = epoch + 1
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
        "images_seen": state["epoch"] * len(indices),
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
