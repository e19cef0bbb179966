"""What a cell costs besides seconds: forward FLOPs per image and peak memory."""

from __future__ import annotations

import contextlib
import json
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness import search
from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.weights import resolve
from harness.cache import digest, keep
from harness.embeddings import Embedded, load_model, model_key
from harness.errors import blame
from harness.records import Cost
from harness.runtime import device

if TYPE_CHECKING:
    from harness.finetune import Tuned
    from harness.strategies import Outcome

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def gflops_per_image(spec: BackboneSpec, pre: Preprocess | None, cache_root: Path) -> float | None:
    """Forward GFLOPs of one image at ``pre.size`` (``torch.utils.flop_counter``, which
    counts a multiply-add as two FLOPs and covers matmuls and convolutions), remembered in
    the cache so that a run whose embeddings are all cached loads no model for it; None
    for precomputed vectors (no model here to count)."""
    if pre is None:
        return None
    weights = resolve(spec)
    key = {**model_key(spec, weights, device()), "size": pre.size, "kind": "gflops"}
    name = digest(key)
    path = cache_root / "flops" / f"{name}.json"
    if path.exists():
        return float(json.loads(path.read_text())["gflops"])
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = load_model(spec, weights)
    param = next(model.parameters(), None)  # a team's encoder may have none
    where, dtype = (param.device, param.dtype) if param is not None else ("cpu", torch.float32)
    x = torch.zeros(1, 3, pre.size, pre.size, device=where, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter, blame(f"backbone {spec.name} on a {pre.size}-px image"):
        model(x)
    gflops = counter.get_total_flops() / 1e9
    text = json.dumps({"gflops": gflops, "key": key}, indent=1)
    keep(path, lambda p: p.write_text(text))
    return gflops


def reset_peaks() -> None:
    """Start a new peak-memory window: the process's peak RSS (Linux ``clear_refs``) and,
    if torch is already in use on a GPU, its peak CUDA allocation."""
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_rss_mb() -> float:
    """Peak resident memory since ``reset_peaks`` (``VmHWM``), else since the process
    started (``ru_maxrss``)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_cuda_mb() -> float | None:
    """Peak CUDA memory allocated since ``reset_peaks``; None when no GPU was used."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def cell_cost(
    spec: BackboneSpec,
    pre: Preprocess | None,
    embedded: dict[str, Embedded],
    outcome: Outcome,
    tuned: Tuned | None,
    cache_root: Path,
) -> Cost:
    """What the cell's result took to compute, cached or not: compute seconds per phase
    (embedding and fine-tuning as recorded when they ran), forward GFLOPs per image,
    trainable parameters, estimated training GFLOPs, peak memory, device and the exact
    ranking engine."""
    gflops = gflops_per_image(spec, pre, cache_root)
    # Embedding a text-image model's prompts (zero-shot) is embedding, not training.
    embed_s = sum(e.cost_seconds for e in embedded.values()) + outcome.seconds.get("prompts", 0.0)
    n_images = sum(len(e.indices) for e in embedded.values())
    train_s, trainable, train_gflops = outcome.seconds["fit"], outcome.trainable_params, 0.0
    if tuned is not None and gflops is not None:
        summary = tuned.summary
        head = tuned.head[0].size + tuned.head[1].size
        fraction = (summary["trainable_params"] - head) / summary["backbone_params"]
        # Forward, plus about two forwards' worth of backward for the trainable share.
        train_gflops = gflops * summary["images_seen"] * (1 + 2 * fraction)
        train_s += summary["seconds"]
        trainable += summary["trainable_params"]
    seconds = {"embed": embed_s, "train": train_s, "eval": outcome.seconds["eval"]}
    return Cost(
        seconds={**seconds, "total": sum(seconds.values())},
        images_per_second=n_images / embed_s if embed_s else None,
        gflops_per_image=gflops,
        trainable_params=trainable,
        train_gflops=train_gflops + outcome.train_gflops,
        peak_rss_mb=peak_rss_mb(),
        peak_cuda_mb=peak_cuda_mb(),
        device=device(),
        ranking=search.engine(),
    )
