"""The outcome cache: a cell whose inputs did not change is read, not computed; each input
of its key, changed alone, recomputes exactly the cells it decides; a hit is the miss's
row exactly; a tampered entry is computed again; xdist workers share it."""

import json
from pathlib import Path

import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)
import torch

from harness import outcomes, provenance
from harness.cell import run_cell
from harness.metrics import METRICS, Metric, recall_at_k
from harness.suite import load_suite

pytest_plugins = ["pytester"]

SUITE = """
[profile]
image_size = 32
batch_size = 64
precision = "{precision}"

[gate]
resamples = {resamples}

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-efficientnet", "test-vit"]
strategies = ["knn", "linear"]

[strategy.knn]
neighbours = {neighbours}

[strategy.linear]
C = {grid}
"""
DEFAULTS = {"precision": "fp32", "resamples": 200, "neighbours": 10, "grid": "[1.0, 10.0]"}


def run(tmp_path: Path, **changes) -> dict[str, str]:
    """Each cell's result_cache after running the suite with ``changes``."""
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(**{**DEFAULTS, **changes}))
    return {c.id: run_cell(c, tmp_path / "cache").result_cache for c in load_suite(path).cells}


def misses(got: dict[str, str]) -> set[str]:
    return {cell.split("/", 1)[1] for cell, state in got.items() if state == "miss"}


ALL = {"test-efficientnet/knn", "test-efficientnet/linear", "test-vit/knn", "test-vit/linear"}


@pytest.mark.parametrize(
    ("change", "recomputed"),
    [
        ({"neighbours": 5}, {"test-efficientnet/knn", "test-vit/knn"}),
        ({"grid": "[1.0, 100.0]"}, {"test-efficientnet/linear", "test-vit/linear"}),
        ({"resamples": 300}, ALL),
        ({"precision": "bf16"}, ALL),
    ],
)
def test_a_changed_setting_recomputes_exactly_the_cells_it_decides(tmp_path, change, recomputed):
    assert misses(run(tmp_path)) == ALL
    assert misses(run(tmp_path)) == set()
    assert misses(run(tmp_path, **change)) == recomputed


@pytest.mark.parametrize("what", ["harness", "libraries", "metrics", "weights"])
def test_code_libraries_metrics_and_embeddings_are_in_the_key(tmp_path, monkeypatch, what, extend):
    assert misses(run(tmp_path)) == ALL
    if what == "harness":
        monkeypatch.setattr(outcomes, "harness_digest", lambda: "another harness")
    elif what == "libraries":
        real = provenance.version
        monkeypatch.setattr(provenance, "version", lambda d: "0.0" if d == "numpy" else real(d))
    elif what == "metrics":
        recall3 = Metric("recall@3", "retrieval", per_item=lambda r, n: recall_at_k(r, 3))
        extend(METRICS, recall3)
    else:  # other weights for one backbone: its embeddings' content changes
        from harness.backbones import BACKBONES
        from harness.backbones.build import build_model
        from harness.backbones.weights import resolve

        spec = BACKBONES.get("test-vit")
        torch.manual_seed(7)
        model = build_model(spec, resolve(spec))
        monkeypatch.setenv("SHELFBENCH_WEIGHTS", str(tmp_path))
        torch.save(model.state_dict(), tmp_path / "test-vit.pt")
    expected = {"test-vit/knn", "test-vit/linear"} if what == "weights" else ALL
    assert misses(run(tmp_path)) == expected


def test_a_hit_is_the_miss_row_exactly_and_a_tampered_entry_is_computed_again(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SUITE.format(**DEFAULTS))
    cell = load_suite(tmp_path / "s.toml").cells[0]
    first = run_cell(cell, tmp_path / "cache").to_json()
    again = run_cell(cell, tmp_path / "cache").to_json()
    assert (first["result_cache"], again["result_cache"]) == ("miss", "hit")
    assert again["computed_seconds"] == first["seconds"]
    same = {"seconds", "result_cache", "cache"}  # this run's: the rest is the outcome
    assert json.dumps({k: v for k, v in first.items() if k not in same}, sort_keys=True) == (
        json.dumps({k: v for k, v in again.items() if k not in same}, sort_keys=True)
    )
    (entry,) = (tmp_path / "cache" / "outcomes").glob("*/*.json")
    stored = json.loads(entry.read_text())
    stored["result"]["metrics"]["accuracy"] = 1.0  # a better number, by hand
    entry.write_text(json.dumps(stored))
    redone = run_cell(cell, tmp_path / "cache").to_json()
    assert redone["result_cache"] == "miss" and redone["metrics"] == first["metrics"]
    assert "failed its content check" in capsys.readouterr().err


def test_recompute_ignores_hits_and_the_terminal_marks_cached_rows(pytester, write_suite):
    write_suite(SUITE.format(**DEFAULTS))
    pytester.runpytest().assert_outcomes(passed=4)
    warm = pytester.runpytest()
    warm.stdout.fnmatch_lines(["*test-efficientnet/knn*passed*fp32*hit*cached*"])
    rows = json.loads((pytester.path / "reports" / "latest.json").read_text())["cells"]
    assert {row["result_cache"] for row in rows} == {"hit"}
    again = pytester.runpytest("--shelf-recompute")
    rows = json.loads((pytester.path / "reports" / "latest.json").read_text())["cells"]
    assert {row["result_cache"] for row in rows} == {"miss"}
    assert {row["cache"] for row in rows} == {"hit"}  # embeddings stay cached
    again.assert_outcomes(passed=4)


def test_xdist_workers_share_the_outcome_cache(pytester, write_suite, tmp_path):
    """Two workers each need the incumbent's result ([upgrade]): one computes it, the
    other reads it; a second run reads everything."""
    write_suite(
        SUITE.format(**DEFAULTS)
        + '\n[upgrade]\nincumbent = "test-vit"\ncandidate = "test-efficientnet"\n'
    )
    cache = tmp_path / "shared"
    pytester.runpytest("-n", "2", f"--shelf-cache={cache}").assert_outcomes(passed=4)
    entries = list((cache / "outcomes").glob("*/*.json"))
    assert len(entries) == 4 and not list((cache / "outcomes").glob("*/.*"))
    pytester.runpytest("-n", "2", f"--shelf-cache={cache}").assert_outcomes(passed=4)
    rows = json.loads((pytester.path / "reports" / "latest.json").read_text())["cells"]
    assert {row["result_cache"] for row in rows} == {"hit"}
    assert len(list((cache / "outcomes").glob("*/*.json"))) == 4


def test_setting_up_a_cell_is_not_counted_as_tuning(tmp_path, monkeypatch):
    """The context (dataset, the library's first import) has its own seconds; a cell that
    trains nothing reports no tuning, whether its outcome is computed or read."""
    import time

    from harness import cell as cell_module
    from harness.report import table

    slow = cell_module.context

    def context(*args):
        time.sleep(0.3)
        return slow(*args)

    monkeypatch.setattr(cell_module, "context", context)
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(**DEFAULTS))
    knn = next(c for c in load_suite(path).cells if c.id.endswith("test-efficientnet/knn"))
    computed, read = run_cell(knn, tmp_path / "cache"), run_cell(knn, tmp_path / "cache")
    assert read.result_cache == "hit"
    for row in (computed, read):
        assert row.seconds["setup"] >= 0.3 > row.seconds["tune"]
        assert row.seconds["total"] >= row.seconds["setup"] + row.seconds["embed"]
    train_s = table([computed], ["accuracy"]).rows[0][-2]  # fitting knn's index: little
    assert float(train_s) < 0.3
