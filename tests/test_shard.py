"""Sharded extraction under torchrun (gloo, two CPU processes): the cache it fills holds
the same bits a single process computes, and pytest then finds every embedding cached."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.cell import cell_embeddings
from harness.shard import embed_shard, selected, shard
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


KILLED_RANK = """
import os, signal, sys, time
from pathlib import Path
import harness.cache, harness.embeddings
from harness.shard import embed_shard, selected
from harness.suite import load_suite

harness.cache.PART_ROWS = 16  # a part per batch
real = harness.embeddings.embed_batches

def dies_at_the_second_batch(*args, **kwargs):
    for number, batch in enumerate(real(*args, **kwargs)):
        if number == 1:
            # Parts are written in the background: die once the first one is on disk.
            deadline = time.monotonic() + 60
            while not any(Path(sys.argv[2]).rglob("part-*.npz")) and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)  # no finally, no flush: as kill -9
        yield batch

harness.embeddings.embed_batches = dies_at_the_second_batch
(cell,) = selected(load_suite(Path(sys.argv[1])).cells, "vit")
embed_shard(cell, 1, 2, Path(sys.argv[2]))
"""


def test_a_killed_rank_loses_only_its_unfinished_parts(tmp_path):
    """Rank 1 of 2 is killed (SIGKILL) after writing its first batch: that batch stays
    cached and checks out, rank 0's share is whole, and pytest computes only the rest."""
    (tmp_path / "s.toml").write_text(SUITE)
    cache = tmp_path / "cache"
    env = {**os.environ, "SHELFBENCH_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", KILLED_RANK, str(tmp_path / "s.toml"), str(cache)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -9, run.stderr[-3000:]
    (cell,) = selected(load_suite(tmp_path / "s.toml").cells, "vit")
    embed_shard(cell, 0, 2, cache)
    resumed = cell_embeddings(cell, cache)
    n_train, n_test = len(resumed["train"].vectors), len(resumed["test"].vectors)
    rank0 = {n: len(shard(np.arange(n), 16, 0, 2)) for n in (n_train, n_test)}
    # rank 1 wrote its first train batch before it died, and nothing of test
    assert resumed["train"].computed == n_train - rank0[n_train] - 16
    assert resumed["test"].computed == n_test - rank0[n_test]
    single = cell_embeddings(cell, tmp_path / "single")
    for split in ("train", "test"):
        np.testing.assert_array_equal(resumed[split].vectors, single[split].vectors)


def test_without_torchrun_or_with_a_bad_k_it_is_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    smoke = str(ROOT / "suites" / "smoke.toml")
    for args, message in (
        ([smoke], "harness.shard runs under torchrun, which starts its ranks"),
        ([smoke, "-k", "clip and ("], "-k 'clip and (' is not a selection expression"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "harness.shard", *args], capture_output=True, text=True, env=env
        )
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith("shelfbench: error: ") and message in run.stderr
