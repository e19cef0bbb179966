"""A cold zero-shot cell beside LAION's CLIP_benchmark on the same work, in one run.

    python benchmarks/zeroshot_vs_clip_benchmark.py [--precision fp32|bf16] [--n 1000]

The work: one randomly initialised open_clip ViT-B-32 (seed 0, written to a file both
read), the same ``--n`` Fashion-MNIST test images (the cell's seeded sample), the template
"a photo of a {}.", at the same precision (CLIP_benchmark's ``amp`` is bf16 autocast on the
CPU). Each side runs in its own process from an empty cache, timed from start to exit:
shelfbench as ``pytest SUITE.toml``, CLIP_benchmark 1.6.2 as
``zeroshot_classification.evaluate`` (batch 64, 4 loader workers). shelfbench then runs
again warm. Prints one JSON line per run and one with the ratio; accuracy must agree at
fp32. Needs ``pip install clip_benchmark==1.6.2 --no-deps`` beside the test extra. bf16
on a CPU that multiplies it slower than fp32 prints why it is skipped and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = """[suite]
name = "zeroshot-vs-clip-benchmark"

[profile]
n_test = {n}
precision = "{precision}"

[backbones.vitb32-random]
open_clip = "ViT-B-32"
weights = "vitb32-random.pth"
family = "contrastive"

[[cells]]
datasets = ["fashion-mnist"]
backbones = ["vitb32-random"]
strategies = ["zeroshot"]

[strategy.zeroshot]
templates = ["a photo of a {{}}."]
"""


def write_model(path: Path) -> None:
    """The random-init ViT-B-32 both sides read (seed 0)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), path)


def shelfbench(scratch: Path, cache: Path) -> tuple[float, dict[str, float]]:
    """Seconds of one ``pytest`` run of the suite, and the cell's metrics."""
    env = {**os.environ, "SHELFBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    reports = scratch / "reports"
    command = [sys.executable, "-m", "pytest", str(scratch / "suite.toml"), "-q",
               "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
               f"--shelf-reports={reports}", "--shelf-recompute"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"shelfbench exited {done.returncode}:\n{done.stdout[-3000:]}")
    (row,) = json.loads((reports / "latest.json").read_text())["cells"]
    return seconds, row["metrics"] | {"precision": row["precision"]}


def clip_benchmark_child(scratch: Path, n: int, precision: str) -> None:
    """CLIP_benchmark's evaluate on the cell's images (run in a process of its own)."""
    import open_clip
    import torch
    from clip_benchmark.metrics import zeroshot_classification

    from harness.cell import items
    from harness.datasets import open_dataset
    from harness.suite import load_suite

    (cell,) = load_suite(scratch / "suite.toml").cells
    dataset = open_dataset("fashion-mnist")
    rows = items(cell, dataset, "test")
    data = dataset.split("test")
    model, _, transform = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained=str(scratch / "vitb32-random.pth")
    )
    model.eval()

    class Images(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.classes = list(dataset.classes)  # evaluate() reads it

        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return transform(data.image(int(rows[i]))), int(data.labels[rows[i]])

    def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1,)) -> list:
        """CLIP_benchmark 1.6.2's own, but for ``float()`` of a one-element array, which
        numpy 2 refuses: the same top-k hits."""
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]

    zeroshot_classification.accuracy = accuracy
    loader = torch.utils.data.DataLoader(Images(), batch_size=64, num_workers=4)
    metrics = zeroshot_classification.evaluate(
        model,
        loader,
        open_clip.get_tokenizer("ViT-B-32"),
        list(dataset.classes),
        ["a photo of a {c}."],
        "cpu",
        amp=precision == "bf16",
    )
    print(json.dumps({k: float(v) for k, v in metrics.items()}))


def clip_benchmark(scratch: Path, n: int, precision: str) -> tuple[float, dict[str, float]]:
    command = [sys.executable, __file__, "--child", str(scratch), "--n", str(n),
               "--precision", precision]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SHELFBENCH_CACHE": str(scratch / "cb-cache")}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"CLIP_benchmark exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        clip_benchmark_child(args.child, args.n, args.precision)
        return
    from harness.runtime import cpu_has_bf16, device

    if args.precision == "bf16" and device() == "cpu" and not cpu_has_bf16():
        why = "this CPU multiplies bf16 slower than fp32 (runtime.cpu_has_bf16)"
        print(json.dumps({"precision": "bf16", "skipped": why}))
        return
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        (scratch / "suite.toml").write_text(SUITE.format(n=args.n, precision=args.precision))
        write_model(scratch / "vitb32-random.pth")
        theirs, their_metrics = clip_benchmark(scratch, args.n, args.precision)
        print(json.dumps({"run": "CLIP_benchmark cold", "s": round(theirs, 1), **their_metrics}))
        cold, ours = shelfbench(scratch, scratch / "cache")
        print(json.dumps({"run": "shelfbench cold", "s": round(cold, 1), **ours}))
        warm, _ = shelfbench(scratch, scratch / "cache")
        print(json.dumps({"run": "shelfbench warm (embeddings cached)", "s": round(warm, 1)}))
    print(
        json.dumps(
            {
                "precision": args.precision,
                "CLIP_benchmark / shelfbench, cold": round(theirs / cold, 2),
                "accuracy": [their_metrics["acc1"], ours["accuracy"]],
                "top5": [their_metrics["acc5"], ours["top5_accuracy"]],
            }
        )
    )


if __name__ == "__main__":
    main()
