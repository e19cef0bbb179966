"""The embedding cache: keys, partial fills, interruption, and concurrent writers."""

import json
import multiprocessing
import time

import numpy as np
import pytest

from harness.cache import CacheEntry, digest

KEY = {"dataset": "d", "split": "train", "backbone": "b"}


def produce_rows(log=None):
    """A producer whose embedding of item i is [i, 2i, 3i]."""

    def produce(rows):
        for start in range(0, len(rows), 4):
            batch = rows[start : start + 4]
            if log is not None:
                log.extend(batch.tolist())
            yield batch, np.outer(batch, [1, 2, 3]).astype(np.float32)

    return produce


def test_fill_then_read_returns_rows_in_the_requested_order(tmp_path):
    entry = CacheEntry(tmp_path, KEY, n_items=20)
    wanted = np.array([3, 7, 11, 19])
    assert entry.fill(wanted, produce_rows()) == 4
    np.testing.assert_array_equal(entry.read(wanted), np.outer(wanted, [1, 2, 3]))
    assert json.loads((entry.dir / "key.json").read_text()) == KEY


def test_only_missing_rows_are_computed(tmp_path):
    entry = CacheEntry(tmp_path, KEY, n_items=20)
    entry.fill(np.array([1, 2, 3]), produce_rows())
    log: list[int] = []
    assert entry.fill(np.array([2, 3, 4, 5]), produce_rows(log)) == 2
    assert log == [4, 5]
    assert entry.fill(np.array([1, 5]), produce_rows(log)) == 0


def test_any_key_field_changes_the_entry(tmp_path):
    assert digest(KEY) != digest({**KEY, "split": "test"})
    assert digest(KEY) == digest(dict(reversed(list(KEY.items()))))
    assert CacheEntry(tmp_path, KEY, 5).dir != CacheEntry(tmp_path, {**KEY, "b": 1}, 5).dir


def test_interrupted_fill_keeps_finished_batches(tmp_path):
    entry = CacheEntry(tmp_path, KEY, n_items=20)

    def interrupted(rows):
        yield from list(produce_rows()(rows))[:2]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        entry.fill(np.arange(12), interrupted)
    assert entry.done().nonzero()[0].tolist() == list(range(8))
    log: list[int] = []
    entry.fill(np.arange(12), produce_rows(log))
    assert log == [8, 9, 10, 11]
    np.testing.assert_array_equal(entry.read(np.arange(12)), np.outer(np.arange(12), [1, 2, 3]))


def test_reading_rows_never_computed_is_an_error(tmp_path):
    entry = CacheEntry(tmp_path, KEY, n_items=5)
    entry.fill(np.array([0]), produce_rows())
    with pytest.raises(Exception, match="never computed"):
        entry.read(np.array([0, 1]))


def _slow_fill(root, log_path):
    entry = CacheEntry(root, KEY, n_items=8)

    def produce(rows):
        with open(log_path, "a") as log:
            log.write(" ".join(map(str, rows)) + "\n")
        time.sleep(0.3)
        yield rows, np.outer(rows, [1, 2, 3]).astype(np.float32)

    entry.fill(np.arange(8), produce)


def test_concurrent_processes_compute_each_row_once(tmp_path):
    log = tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_slow_fill, args=(tmp_path, log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().splitlines() == ["0 1 2 3 4 5 6 7"]
    np.testing.assert_array_equal(
        CacheEntry(tmp_path, KEY, 8).read(np.arange(8)), np.outer(np.arange(8), [1, 2, 3])
    )


def snapshot(root):
    return sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*"))


def read_only(root):
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        folder.chmod(0o555)


def test_a_read_only_cache_serves_what_it_holds_and_writes_nothing(tmp_path, monkeypatch):
    """A CI job that restores its cache read-only still runs: cached embeddings and
    outcomes are served, the rest is computed for this run and kept nowhere."""
    import timm  # noqa: F401  (see test_plugin.py)

    from harness.cell import run_cell
    from harness.suite import load_suite

    cache = tmp_path / "cache"
    monkeypatch.setenv("SHELFBENCH_CACHE", str(cache))
    suite = tmp_path / "s.toml"
    text = '[suite]\n[profile]\nimage_size = 32\n[[cells]]\ndatasets = ["synthetic-products"]\n'
    suite.write_text(text + 'backbones = ["test-efficientnet"]\nstrategies = ["knn"]\n')
    (cached,) = load_suite(suite).cells
    first = run_cell(cached, cache)
    suite.write_text(text + 'backbones = ["test-vit"]\nstrategies = ["knn", "finetune"]\n')
    new = load_suite(suite).cells
    writable = {c.id: run_cell(c, tmp_path / "elsewhere").metrics for c in new}
    read_only(cache)
    before = snapshot(cache)
    try:
        again = run_cell(cached, cache)
        assert (again.cache, again.result_cache, again.metrics) == ("hit", "hit", first.metrics)
        for cell in new:  # nothing cached: computed, and the same as in a writable cache
            row = run_cell(cell, cache)
            assert (row.cache, row.metrics) == ("miss", writable[cell.id])
        assert snapshot(cache) == before
    finally:
        for folder in [cache, *(p for p in cache.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
