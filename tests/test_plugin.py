"""The pytest plugin end to end, on the tiny suite (synthetic data, random-init model)."""

import json
from pathlib import Path

import pytest
import timm  # noqa: F401
import torch  # noqa: F401

from harness.datasets import fashion_mnist

# pytester's in-process runs drop the modules they imported when they end, and extension
# modules do not survive a second import (faiss's segfaulted). Importing the heavy libraries
# here keeps them loaded once for the whole module.

pytest_plugins = ["pytester"]

TINY = (Path(__file__).parents[1] / "fixtures" / "suites" / "tiny.toml").read_text()
KNN = "synthetic-products/test-efficientnet/knn"
LINEAR = "synthetic-products/test-efficientnet/linear"


def floor(cell, metric, value):
    return (
        f'\n[floors."{cell}"]\n"{metric}" = {{ floor = {value}, measured = {value}, '
        'date = "2026-11-27", machine = "test" }\n'
    )


@pytest.fixture
def suite(write_suite):
    def write(toml: str = TINY) -> Path:
        return write_suite(toml)

    return write


def report(pytester) -> dict:
    return json.loads((pytester.path / "reports" / "latest.json").read_text())


def test_cells_pass_and_the_report_has_the_stable_schema(pytester, suite):
    suite(TINY + floor(KNN, "accuracy", 0.2))
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*shelfbench*", f"{KNN}*passed*", "*wrote*latest.json"])
    data = report(pytester)
    assert data["schema"] == 2
    assert {
        "harness",
        "python",
        "torch",
        "timm",
        "open_clip",
        "git_commit",
        "host",
        "started",
        "finished",
    } <= set(data["provenance"])
    cells = {c["id"]: c for c in data["cells"]}
    assert list(cells) == [KNN, LINEAR]
    knn = cells[KNN]
    for field in (
        "id",
        "dataset",
        "backbone",
        "strategy",
        "outcome",
        "metrics",
        "floors",
        "seconds",
        "cache",
        "n_train",
        "n_test",
        "dataset_fingerprint",
        "weights_sha256",
        "cost",
    ):
        assert field in knn
    assert knn["outcome"] == "passed" and knn["floors"] == {"accuracy": 0.2}
    assert (knn["n_train"], knn["n_test"]) == (320, 96)
    assert set(knn["seconds"]) >= {"embed", "fit", "eval"}
    assert set(knn["cost"]) == {
        "seconds",
        "images_per_second",
        "gflops_per_image",
        "trainable_params",
        "train_gflops",
        "peak_rss_mb",
        "peak_cuda_mb",
        "device",
        "ranking",
    }
    assert set(knn["cost"]["seconds"]) == {"embed", "train", "eval", "total"}
    assert all(isinstance(v, float) for v in knn["metrics"].values())
    md = (pytester.path / "reports" / "latest.md").read_text()
    # The results, intervals and cost tables.
    assert md.count(f"\n| {KNN} ") == 3 and "Pareto" in md  # rows that start with it
    assert "## Recommendation" in md
    assert (pytester.path / "reports" / "latest.csv").read_text().splitlines()[0].startswith("id,")


def test_second_run_reads_the_cache(pytester, suite):
    suite()
    pytester.runpytest().assert_outcomes(passed=2)
    assert [c["cache"] for c in report(pytester)["cells"]] == ["miss", "hit"]
    pytester.runpytest().assert_outcomes(passed=2)
    assert [c["cache"] for c in report(pytester)["cells"]] == ["hit", "hit"]


def test_a_metric_below_its_floor_fails_with_value_floor_and_sizes(pytester, suite):
    suite(TINY + floor(LINEAR, "macro_f1", 0.999))
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*macro_f1 = 0.* is below its floor 0.9990*n_train=320, n_test=96"]
    )
    cell = report(pytester)["cells"][1]
    assert cell["outcome"] == "failed" and "macro_f1" in cell["metrics"]
    assert "below its floor" in cell["message"]


def test_k_selects_cells_by_id(pytester, suite):
    suite()
    pytester.runpytest("-k", "knn").assert_outcomes(passed=1, deselected=1)
    assert [c["id"] for c in report(pytester)["cells"]] == [KNN]


MISSING_DATA = """
[suite]
name = "needs-data"

[profile]
n_train = 10
n_test = 10

[[cells]]
datasets = ["fashion-mnist"]
backbones = ["test-efficientnet"]
strategies = ["knn"]
"""


def test_missing_data_skips_with_how_to_and_require_fails(pytester, suite, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", pytester.path / "absent")
    monkeypatch.setenv("SHELFBENCH_DATA", str(pytester.path))
    suite(MISSING_DATA)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*apt-get install dataset-fashion-mnist*"])
    cell = report(pytester)["cells"][0]
    assert cell["outcome"] == "skipped" and "shelfbench data fetch" in cell["message"]
    pytester.runpytest("--shelf-require").assert_outcomes(failed=1)


@pytest.mark.parametrize(
    ("env", "args", "table", "outcome"),
    [
        ({"CI": "true"}, [], "", "failed"),
        ({"CI": "true"}, ["--shelf-allow-missing"], "", "skipped"),
        ({"CI": "true"}, [], '[gate]\nunavailable = "skip"\n', "skipped"),
        ({}, [], '[gate]\nunavailable = "fail"\n', "failed"),
        ({}, ["--shelf-baseline", "base.json"], "", "failed"),
        ({}, [], "", "skipped"),
    ],
)
def test_a_gate_that_could_not_judge_does_not_pass(
    pytester, suite, monkeypatch, env, args, table, outcome
):
    """Under $CI, a baseline or [upgrade], a cell whose data is missing fails unless the
    suite or a flag says skipping is fine; the line says which and how to allow it."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", pytester.path / "absent")
    monkeypatch.setenv("SHELFBENCH_DATA", str(pytester.path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if args[:1] == ["--shelf-baseline"]:
        suite(TINY)
        pytester.runpytest("--shelf-update-baseline", "--shelf-baseline=base.json")
    suite(MISSING_DATA + table)
    result = pytester.runpytest(*args)
    result.assert_outcomes(**{outcome: 1})
    if outcome == "failed":
        result.stdout.fnmatch_lines(["*apt-get install dataset-fashion-mnist*does not pass*"])
        assert table or "--shelf-allow-missing" in result.stdout.str()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('"test-efficientnet"', '"nope"'), "unknown backbone 'nope'"),
        (lambda t: t + floor(KNN, "acuracy", 0.1), "no metric 'acuracy'"),
        (
            lambda t: t + f'\n[floors."{KNN}"]\naccuracy = {{ floor = 0.5 }}\n',
            "a floor records its measurement",
        ),
        (lambda t: t.replace("[profile]", "[profile]\nimage_sise = 3"), "image_sise"),
    ],
)
def test_suite_mistakes_fail_collection_in_one_line(pytester, suite, edit, message):
    suite(edit(TINY))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*{message}*"])
    assert "Traceback" not in result.stdout.str()


def test_xdist_workers_report_through_the_controller(pytester, suite):
    suite()
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=2)
    assert sorted(c["id"] for c in report(pytester)["cells"]) == [KNN, LINEAR]
    assert all(c["metrics"] for c in report(pytester)["cells"])


ZOO = """
[profile]
n_train = 10
n_test = 10

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-clip", "test-vit", "siglip-vit-b16"]
strategies = ["knn"]
"""


def test_k_clip_selects_open_clip_cells_and_missing_weights_skip(pytester, suite, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(pytester.path / "empty-hub"))
    suite(ZOO)
    result = pytester.runpytest("-k", "clip")
    result.assert_outcomes(passed=1, skipped=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["skipped synthetic-products/siglip-vit-b16/knn: weights for siglip-vit-b16*"]
    )
    cells = {c["id"]: c for c in report(pytester)["cells"]}
    skipped = cells["synthetic-products/siglip-vit-b16/knn"]
    assert skipped["outcome"] == "skipped"
    assert "shelfbench weights fetch siglip-vit-b16" in skipped["message"]
    pytester.runpytest("-k", "vit and not clip").assert_outcomes(passed=1, deselected=2)


def test_xdist_workers_take_one_gpu_each_in_turn():
    from harness.runtime import worker_gpu

    assert [worker_gpu(f"gw{i}", None, 4) for i in range(5)] == ["0", "1", "2", "3", "0"]
    assert worker_gpu("gw1", "2,5", 8) == "5" and worker_gpu("gw2", "2, 5", 8) == "2"
    assert worker_gpu("gw0", None, 0) is None and worker_gpu("gw0", "", 4) is None
