"""Bad input met on the newer surfaces (remote roots, served vectors, the job summary,
includes, history, check, compare, a team's module): each ends in one clear line naming
the file, table, key or URL, or in a visible warning, never a traceback."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)

from harness.cell import run_cell
from harness.cli import main
from harness.errors import DatasetError, EmbeddingError, SuiteError, WeightsError
from harness.suite import load_suite
from harness.vectors import read_table

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[1]
TINY = (ROOT / "fixtures" / "suites" / "tiny.toml").read_text()
CATALOGUE = ROOT / "fixtures" / "datasets" / "catalogue" / "csv"


def test_a_cache_folder_that_is_a_file_is_one_line_before_any_cell(pytester, write_suite):
    write_suite(TINY)
    cache = pytester.path / "cache"
    cache.mkdir()
    (cache / "outcomes").write_text("not a folder")
    result = pytester.runpytest(f"--shelf-cache={cache}")
    result.stderr.fnmatch_lines(["*the cache's outcomes folder*must be a directory*regular file"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("target", ["folder", "missing/x.md"])
def test_a_job_summary_that_cannot_be_written_is_a_line_not_a_crash(
    pytester, write_suite, monkeypatch, target
):
    write_suite(TINY)
    (pytester.path / "folder").mkdir()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / target))
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*$GITHUB_STEP_SUMMARY = *the job summary was not written*"])
    result.stdout.fnmatch_lines(["*test-efficientnet/knn*passed*"])  # the table is printed


def test_including_a_toml_that_is_not_a_suite_names_both_files(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    (tmp_path / "s.toml").write_text('[suite]\ninclude = ["pyproject.toml"]\n')
    with pytest.raises(SuiteError) as caught:
        load_suite(tmp_path / "s.toml")
    message = str(caught.value)
    assert "s.toml: [suite] include = 'pyproject.toml'" in message
    assert "pyproject.toml is not a suite's tables (it has [tool]" in message


def test_an_image_column_of_text_is_one_line(tmp_path):
    table = {"image": ["a.png", "b.png"], "label": ["x", "y"], "split": ["train", "test"]}
    pq.write_table(pa.table(table), tmp_path / "items.parquet")
    spec = {"format": "parquet", "root": str(tmp_path), "manifest": "items.parquet"}
    (tmp_path / "s.toml").write_text(
        "[suite]\n[datasets.c]\n"
        + "\n".join(f'{k} = "{v}"' for k, v in spec.items())
        + '\nimage = "image"\n[[cells]]\ndatasets = ["c"]\nbackbones = ["test-vit"]\n'
        + 'strategies = ["knn"]\n'
    )
    (cell,) = load_suite(tmp_path / "s.toml").cells
    with pytest.raises(DatasetError, match="row 1: column 'image' holds str, not image bytes"):
        run_cell(cell, tmp_path / "cache")


def test_test_images_that_are_also_train_images_are_warned_about(tmp_path):
    """Recall@1 rose from 0.875 to 1.0 with no word when test rows named train images."""
    shutil.copytree(CATALOGUE, tmp_path / "csv")
    rows = (tmp_path / "csv" / "items.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    train = [r for r in body if ",train," in r]
    test = [r for r in body if ",test," in r]
    leaked = [t.split(",", 1)[0] for t in train[:3]]  # three test rows show train images
    test = [",".join([path, *row.split(",")[1:]]) for path, row in zip(leaked, test, strict=False)]
    test += [r for r in body if ",test," in r][3:]
    (tmp_path / "csv" / "items.csv").write_text("\n".join([header, *train, *test]) + "\n")
    suite = (ROOT / "fixtures" / "suites" / "catalogue.toml").read_text()
    suite = suite.replace("../datasets/catalogue/csv", str(tmp_path / "csv"))
    suite = suite.replace("../datasets/", str(ROOT / "fixtures" / "datasets") + "/")
    (tmp_path / "s.toml").write_text(suite.replace("catalogue-", "leaky-"))  # names its own
    cells = {c.id: c for c in load_suite(tmp_path / "s.toml").cells}
    row = run_cell(cells["leaky-csv/test-efficientnet/knn"], tmp_path / "cache")
    assert any("3 of " in w and "also a train item's" in w for w in row.warnings), row.warnings
    clean = run_cell(cells["leaky-folder/test-efficientnet/knn"], tmp_path / "cache")
    assert not any("also a train item's" in w for w in clean.warnings)


@pytest.mark.parametrize(
    ("table", "said"),
    [
        (pa.table({"id": pa.array([], pa.string()),
                   "vector": pa.array([], pa.list_(pa.float32()))}),
         "has no rows"),
        (pa.table({"id": ["a", "b"], "vector": ["0.1,0.2", "0.3,0.4"]}),
         "the vector column is string, not a list of numbers"),
        (pa.table({"id": ["a", "b"], "vector": [["x"], ["y"]]}),
         "not a list of numbers"),
    ],
)  # fmt: skip
def test_a_vectors_table_that_holds_no_vectors_is_one_line(tmp_path, table, said):
    path = tmp_path / "v.parquet"
    pq.write_table(table, path)
    with pytest.raises(EmbeddingError, match=said):
        read_table(str(path), "sha")


def test_history_says_which_run_copy_it_left_out(pytester, write_suite, capsys):
    write_suite(TINY)
    pytester.runpytest().assert_outcomes(passed=2)
    pytester.runpytest().assert_outcomes(passed=2)
    runs = sorted((pytester.path / "reports" / "runs").iterdir())
    (runs[0] / "latest.json").write_text("{ damaged")
    capsys.readouterr()
    assert main(["history", str(pytester.path / "reports")]) == 0
    err = capsys.readouterr().err
    assert f"history leaves out the run copy {runs[0]}" in err and err.count("\n") == 1


def test_check_fails_a_dataset_root_that_is_not_there(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(
        '[suite]\n[datasets.nowhere]\nformat = "csv"\nroot = "nowhere"\n[[cells]]\n'
        'datasets = ["nowhere"]\nbackbones = ["test-vit"]\nstrategies = ["knn"]\n'
    )
    assert main(["check", str(tmp_path / "s.toml")]) == 1
    out = capsys.readouterr().out
    assert f"[datasets.nowhere] root {tmp_path / 'nowhere'} does not exist" in out


def test_compare_refuses_a_metric_that_is_not_a_number(pytester, write_suite, capsys):
    write_suite(TINY)
    pytester.runpytest().assert_outcomes(passed=2)
    reports = pytester.path / "reports"
    report = json.loads((reports / "latest.json").read_text())
    report["cells"][0]["metrics"]["mmp@5"] = "0.5"
    (reports / "edited.json").write_text(json.dumps(report))
    shutil.copy(reports / "latest.items.npz", reports / "edited.items.npz")
    capsys.readouterr()
    assert main(["compare", str(reports / "latest.json"), str(reports / "edited.json")]) == 2
    err = capsys.readouterr().err
    assert "metric 'mmp@5' is '0.5', not a number" in err and err.count("\n") == 1


def test_a_team_factory_that_raises_points_into_the_teams_file(tmp_path, monkeypatch):
    (tmp_path / "team_models.py").write_text(
        "def broken():\n    raise RuntimeError('no such layer')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "s.toml").write_text(
        '[suite]\n[backbones.mine]\nmodule = "team_models:broken"\nimage_size = 32\n'
        "mean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\n[[cells]]\n"
        'datasets = ["synthetic-products"]\nbackbones = ["mine"]\nstrategies = ["knn"]\n'
    )
    (cell,) = load_suite(tmp_path / "s.toml").cells
    with pytest.raises(WeightsError) as caught:
        run_cell(cell, tmp_path / "cache")
    said = str(caught.value)
    assert "RuntimeError: no such layer" in said
    assert f"raised at {tmp_path / 'team_models.py'}:2 in broken" in said


def test_two_numbers_for_three_channels_say_so(tmp_path):
    (tmp_path / "s.toml").write_text(
        '[suite]\n[backbones.mine]\nmodule = "m:f"\nimage_size = 32\nmean = [0.5, 0.5]\n'
        "std = [0.5, 0.5, 0.5]\n"
    )
    with pytest.raises(SuiteError, match=r"mean = \[0.5, 0.5\]: must be three numbers"):
        load_suite(tmp_path / "s.toml")


def test_the_fixture_path_of_the_docs_writes_a_report(pytester, write_suite):
    """docs/suites.md: a test function that runs cells with the ``shelfbench`` fixture
    gets the same report as suite files."""
    cells = TINY.replace('[suite]\nname = "tiny"\nversion = 1\n', "")  # not collected itself
    (pytester.path / "cells.toml").write_text(cells)
    pytester.makepyfile(
        test_mine="""
from pathlib import Path

from harness.suite import load_suite


def test_my_cells(shelfbench):
    for cell in load_suite(Path(__file__).parent / "cells.toml").cells:
        shelfbench.check(cell)
"""
    )
    result = pytester.runpytest("test_mine.py")
    result.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "reports" / "latest.json").read_text())
    assert {c["id"] for c in report["cells"]} == {
        "synthetic-products/test-efficientnet/knn",
        "synthetic-products/test-efficientnet/linear",
    }
    assert np.all([c["outcome"] == "passed" and c["metrics"] for c in report["cells"]])
