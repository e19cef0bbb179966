"""Extraction and fine-tuning throughput on this machine's device (not part of CI).

    SHELFBENCH_DATA=... python benchmarks/device_throughput.py [N] [BATCH]

Prints one JSON line per measurement, for EfficientNet-Lite0 and ViT-B/16 (both random
init: throughput does not depend on the weights) at 224 px on Fashion-MNIST's first N train
images (default 20,000), batch 256:

- ``model_only``: a fixed random batch already on the device, fp32 / tf32 (CUDA) / bf16;
- ``data_only``: ``load_batches`` + ``Loaded.pixels`` + ``to_tensor`` onto the device
  (Fashion-MNIST is held in memory: its 28 px uint8 images travel, and are resized, bit
  for bit as PIL would, and normalised on the device);
- ``embed``: ``harness.embeddings.embed`` end to end into a fresh cache, at ``auto``
  precision, and its share of model-only at that precision;
- ``finetune``: Lite0 at 128 px, one epoch of ``harness.finetune`` over up to 4,096 images
  (random crops, resizes and flips drawn on the host, applied on the device), at batch 32
  (the suites' default) and at BATCH.

Each line names the device, the precision and (on the CPU) whether bf16 is native, so a
figure is never read without what produced it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.backbones.base import BackboneSpec, Preprocess, Weights
from harness.backbones.weights import resolve
from harness.datasets import open_dataset
from harness.datasets.base import Split
from harness.embeddings import embed, load_model
from harness.extract import load_batches, to_tensor
from harness.finetune import finetune
from harness.runtime import cpu_has_bf16, device, extracting, resolve_precision
from harness.training import TRAIN_DEFAULTS, Run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
BATCH = int(sys.argv[2]) if len(sys.argv) > 2 else 256
DEV = device()
WHERE = torch.cuda.get_device_name() if DEV == "cuda" else f"cpu, bf16 faster: {cpu_has_bf16()}"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MODELS = [
    BackboneSpec(
        name="lite0-random",
        family="untrained",
        kind="cnn",
        source="timm",
        model="tf_efficientnet_lite0",
        weights=Weights(source="random", seed=0),
        preprocess=Preprocess(224, "bicubic", crop_pct=0.875, mean=(0.5,) * 3, std=(0.5,) * 3),
        embed_dim=1280,
        pooling="avg",
    ),
    BackboneSpec(
        name="vitb16-random",
        family="untrained",
        kind="vit",
        source="timm",
        model="vit_base_patch16_224",
        weights=Weights(source="random", seed=0),
        preprocess=Preprocess(224, "bicubic", crop_pct=0.9, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        embed_dim=768,
        pooling="token",
    ),
]


def say(**row: object) -> None:
    print(json.dumps({"device": WHERE, **row}), flush=True)


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def model_only(model: torch.nn.Module, px: int, precision: str) -> float:
    x = torch.randn(BATCH, 3, px, px, device=DEV).contiguous(memory_format=torch.channels_last)
    model = model.to(DEV, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
    reps = max(3, min(30, N // BATCH))
    with extracting(precision, DEV):  # as extraction runs a forward pass
        for _ in range(2):
            model(x)
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            model(x)
        sync()
    return BATCH * reps / (time.perf_counter() - start)


def data_only(pre: Preprocess, split: Split, rows: np.ndarray) -> float:
    start, n = time.perf_counter(), 0
    for batch in load_batches(split, rows, pre, BATCH):
        to_tensor(batch.pixels(DEV), pre, DEV)
        n += len(batch.rows)
    sync()
    return n / (time.perf_counter() - start)


def main() -> None:
    dataset = open_dataset("fashion-mnist")
    rows = np.arange(N)
    auto = resolve_precision("auto")
    for spec in MODELS:
        assert spec.preprocess is not None
        pre = spec.preprocess.resized(224, 1.0)
        model = load_model(spec, resolve(spec))
        ceiling = {}
        for precision in ("fp32", "tf32", "bf16") if DEV == "cuda" else ("fp32", "bf16"):
            ceiling[precision] = model_only(model, 224, precision)
            say(model=spec.name, px=224, what="model_only", precision=precision,
                img_s=round(ceiling[precision], 1))  # fmt: skip
        say(model=spec.name, px=224, what="data_only", precision="uint8 to device",
            img_s=round(data_only(pre, dataset.split("train"), rows), 1))  # fmt: skip
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            embed(dataset, "train", rows, spec, pre, BATCH, Path(cache), precision=auto)
            rate = N / (time.perf_counter() - start)
        say(model=spec.name, px=224, what="embed", precision=auto, img_s=round(rate, 1),
            share_of_model_only=round(rate / ceiling[auto], 3))  # fmt: skip
    lite0 = MODELS[0]
    assert lite0.preprocess is not None
    pre = lite0.preprocess.resized(128, 1.0)
    rows = np.arange(min(N, 4096))  # one epoch of up to 4,096 images per batch size
    for batch in sorted({32, BATCH}):
        params = {**TRAIN_DEFAULTS, "epochs": 1, "batch_size": batch}
        with tempfile.TemporaryDirectory() as cache:
            run = Run(dataset, rows, lite0, resolve(lite0), pre, None, params)
            tuned = finetune(run, Path(cache))
        seconds, seen = tuned.summary["seconds"], tuned.summary["images_seen"]
        say(model=lite0.name, px=128, what="finetune", batch=batch,
            precision=tuned.summary["amp"] or "fp32", img_s=round(seen / seconds, 1),
            seconds=round(seconds, 1))  # fmt: skip


if __name__ == "__main__":
    main()
