"""Sharded extraction under torchrun (gloo, two CPU processes): the cache it fills holds
the same bits a single process computes, and pytest then finds every embedding cached."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.cell import cell_embeddings
from harness.shard import selected, shard
from harness.suite import load_suite

ROOT = Path(__file__).parents[1]
SUITE = """
[profile]
image_size = 48
batch_size = 16

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-efficientnet", "test-vit"]
strategies = ["knn"]
"""


def test_ranks_take_whole_batches_in_turn():
    items = np.arange(10)
    assert shard(items, 3, 0, 2).tolist() == [0, 1, 2, 6, 7, 8]
    assert shard(items, 3, 1, 2).tolist() == [3, 4, 5, 9]
    assert shard(items, 3, 3, 4).tolist() == [9] and shard(items, 3, 5, 6).tolist() == []


def test_k_selects_cells_as_pytest_does(tmp_path):
    (tmp_path / "s.toml").write_text(SUITE)
    cells = load_suite(tmp_path / "s.toml").cells
    assert [c.backbone for c in selected(cells, "vit and not efficientnet")] == ["test-vit"]
    assert len(selected(cells, "cnn or vit")) == 2 and selected(cells, "clip") == []


def test_two_ranks_fill_the_cache_a_single_process_would(tmp_path):
    (tmp_path / "s.toml").write_text(SUITE)
    env = {**os.environ, "SHELFBENCH_THREADS": "1"}
    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    shard_run = ["-m", "harness.shard", str(tmp_path / "s.toml"), "-k", "vit"]
    run = subprocess.run(
        [*torchrun, f"--master_port={port}", *shard_run, "--cache", str(tmp_path / "sharded")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0/2: synthetic-products/test-vit/knn:" in run.stdout
    (cell,) = selected(load_suite(tmp_path / "s.toml").cells, "vit")
    sharded = cell_embeddings(cell, tmp_path / "sharded")
    single = cell_embeddings(cell, tmp_path / "single")
    for split in ("train", "test"):
        assert sharded[split].computed == 0  # all there: pytest would compute nothing
        np.testing.assert_array_equal(sharded[split].vectors, single[split].vectors)
