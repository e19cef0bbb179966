"""Sharded extraction with torch.distributed: each rank embeds its share of the images of
the selected cells into the shared cache, and a following ``pytest suites/ -k EXPR`` finds
every embedding cached.

    torchrun --nproc_per_node=N -m harness.shard SUITE_FILE [-k EXPR] [--cache DIR]

gloo on the CPU, NCCL on GPUs (one GPU per local rank). Multi-node is the same command with
torchrun's rendezvous flags (``--nnodes``, ``--rdzv-backend c10d``, ``--rdzv-endpoint``)
and a cache directory every node mounts. Ranks split each split's items by whole batches
(rank r takes batches r, r + N, ...), so every image is embedded in the same batch as a
single process would embed it, and the cached embeddings are the same bits. Each rank
writes its own atomic parts; a killed rank loses only the parts it had not written.
Strategies that fine-tune first are left to pytest (their backbone is trained there).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.backbones.libraries import has_text
from harness.cell import context, items
from harness.embeddings import embed
from harness.errors import ShelfbenchError, SuiteError, Unavailable
from harness.paths import cache_root
from harness.runtime import device
from harness.strategies import parse_strategy
from harness.suite import Cell, load_suite


def selected(cells: tuple[Cell, ...], expression: str | None) -> list[Cell]:
    """The cells ``pytest -k EXPRESSION`` would select: a name matches a cell when it is a
    case-insensitive substring of its id or one of its markers (family, kind, clip)."""
    if not expression:
        return list(cells)
    from _pytest.mark import expression as pytest_expression

    bad = getattr(pytest_expression, "ParseError", SyntaxError)  # pytest 8; 9 raises SyntaxError
    try:
        compiled = pytest_expression.Expression.compile(expression)
    except (SyntaxError, bad) as exc:
        raise SuiteError(f"-k {expression!r} is not a selection expression: {exc}") from None
    chosen = []
    for cell in cells:
        spec = cell.backbone_spec
        clip = ["clip"] if has_text(spec) else []
        words = [w.lower() for w in (cell.id, spec.family, spec.kind, *clip)]
        if compiled.evaluate(_matcher(words)):
            chosen.append(cell)
    return chosen


def _matcher(words: list[str]) -> Callable[..., bool]:
    """What ``-k`` asks of a cell: whether a name is part of one of its ``words``."""

    def matches(name: str, /, **kwargs: object) -> bool:
        return any(name.lower() in w for w in words)

    return matches


def shard(indices: np.ndarray, batch_size: int, rank: int, world: int) -> np.ndarray:
    """This rank's share of ``indices``: batches rank, rank + world, ... (whole batches)."""
    starts = range(rank * batch_size, len(indices), world * batch_size)
    parts = [indices[start : start + batch_size] for start in starts]
    return np.concatenate(parts) if parts else indices[:0]


def embed_shard(cell: Cell, rank: int, world: int, cache: Path) -> int:
    """Embed this rank's share of every split the cell reads; return how many it computed."""
    ctx = context(cell, cache)
    computed = 0
    for split in ctx.strategy.splits:
        mine = shard(items(cell, ctx.dataset, split), cell.profile.batch_size, rank, world)
        if len(mine):
            got = embed(
                ctx.dataset,
                split,
                mine,
                ctx.spec,
                ctx.pre,
                cell.profile.batch_size,
                cache,
                precision=ctx.precision,
                lock=f"lock-rank{rank}",  # ranks fill disjoint rows: none waits for another
            )
            computed += got.computed
    return computed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.shard", description=__doc__)
    parser.add_argument("suite", type=Path)
    parser.add_argument("-k", dest="expression", help="select cells as pytest -k does")
    parser.add_argument("--cache", type=Path, help="embedding cache (default $SHELFBENCH_CACHE)")
    args = parser.parse_args(argv)
    try:
        cells = selected(load_suite(args.suite).cells, args.expression)
    except ShelfbenchError as exc:
        print(f"shelfbench: error: {exc}", file=sys.stderr)
        return 2
    if not all(os.environ.get(name) for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR")):
        print(
            "shelfbench: error: harness.shard runs under torchrun, which starts its ranks: "
            f"torchrun --nproc_per_node=N -m harness.shard {args.suite}",
            file=sys.stderr,
        )
        return 2
    import torch
    import torch.distributed as dist

    cuda = device() == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        for cell in cells:
            if parse_strategy(cell.strategy)[1] is not None:
                print(f"rank {rank}: {cell.id} fine-tunes first; pytest embeds it", flush=True)
                continue
            try:
                computed = embed_shard(cell, rank, world, args.cache or cache_root())
            except Unavailable as exc:  # as pytest skips it
                print(f"rank {rank}: skipped {cell.id}: {exc}", flush=True)
                continue
            print(f"rank {rank}/{world}: {cell.id}: {computed} images embedded", flush=True)
        dist.barrier()
    except ShelfbenchError as exc:
        print(f"shelfbench: error: rank {rank}: {exc}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
