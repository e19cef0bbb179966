"""Suite files: cells, ids and order, parameters, floors."""

import re
from pathlib import Path

import pytest

from harness.errors import SuiteError
from harness.suite import load_suite

ROOT = Path(__file__).parents[1]


def test_default_suite_declares_the_embedded_default_cells():
    suite = load_suite(ROOT / "suites" / "default.toml")
    assert [(c.id, c.run_profile) for c in suite.cells] == [
        ("fashion-mnist/effnet-lite0/knn", "default"),
        ("fashion-mnist/effnet-lite0/linear", "default"),
        ("fashion-mnist/effnet-lite0/mlp", "full"),
        ("fashion-mnist/effnet-lite0/partial:2", "full"),
        ("fashion-mnist/effnet-lite0/finetune", "full"),
        ("fashion-mnist/effnet-lite0/adaptive", "full"),
    ]
    for cell in suite.cells:
        if cell.run_profile == "default":
            assert cell.floors, f"{cell.id} has no floor: CI would gate on nothing"
        for f in cell.floors:
            assert f.floor <= f.measured and f.date and f.machine


def test_cells_are_the_product_in_declaration_order(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[[cells]]\ndatasets = ["synthetic-products", "fashion-mnist"]\n'
        'backbones = ["test-vit"]\nstrategies = ["linear", "knn"]\n'
        "[strategy.knn]\nneighbours = 5\n"
    )
    suite = load_suite(path)
    assert [str(c) for c in suite.cells] == [
        "synthetic-products/test-vit/linear",
        "synthetic-products/test-vit/knn",
        "fashion-mnist/test-vit/linear",
        "fashion-mnist/test-vit/knn",
    ]
    assert suite.cells[1].params["neighbours"] == 5
    assert suite.cells[0].params["max_iter"] == 1000
    assert suite.name == "s"


def test_unknown_strategy_parameter_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        'strategies = ["knn"]\n[strategy.knn]\nneighbors = 5\n'
    )
    with pytest.raises(
        SuiteError, match=r"\[strategy.knn\]: unknown key 'neighbors'; it takes neighbours"
    ):
        load_suite(path)


def test_zeroshot_needs_a_text_image_backbone(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        'strategies = ["zeroshot"]\n'
    )
    with pytest.raises(SuiteError, match="zeroshot needs a text tower; test-vit"):
        load_suite(path)


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ("partial", "strategy 'partial' needs an argument: partial:N"),
        ("partial:x", "partial:x: N must be a whole number of blocks"),
        ("knn:3", "strategy 'knn' takes no argument"),
        ("cross:nope", "unknown dataset 'nope'"),
    ],
)
def test_strategy_arguments_are_checked_at_load(tmp_path, strategy, message):
    path = tmp_path / "s.toml"
    path.write_text(
        f'[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        f'strategies = ["{strategy}"]\n'
    )
    with pytest.raises(SuiteError, match=re.escape(message)):
        load_suite(path)


def test_cross_tuning_takes_the_finetune_settings_and_profiles_tag_cells(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[[cells]]\ndatasets = ["synthetic-shelf"]\nbackbones = ["test-vit"]\n'
        'strategies = ["cross:synthetic-products", "partial:2"]\nprofile = "full"\n'
        "[strategy.finetune]\nepochs = 7\n[strategy.cross]\nlr = 0.5\n"
    )
    cross, partial = load_suite(path).cells
    assert (cross.params["epochs"], cross.params["lr"]) == (7, 0.5)
    assert partial.params["epochs"] == 3  # partial has its own table
    assert cross.run_profile == partial.run_profile == "full"


def test_a_suite_extends_another_key_by_key_and_cycles_are_one_line(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.toml").write_text(
        "[profile]\nimage_size = 32\nbatch_size = 8\n"
        "[strategy.knn]\nneighbours = 5\ntemperature = 0.1\n"
        '[datasets.base-folder]\nformat = "imagefolder"\nroot = "data"\n'
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        'strategies = ["knn"]\n'
    )
    (tmp_path / "pr.toml").write_text(
        '[suite]\ninclude = ["shared/base.toml"]\n[profile]\nbatch_size = 16\n'
        "[strategy.knn]\nneighbours = 7\n"
        '[[cells]]\ndatasets = ["synthetic-shelf"]\nbackbones = ["test-vit"]\n'
        'strategies = ["linear"]\n'
    )
    suite = load_suite(tmp_path / "pr.toml")
    assert suite.name == "pr" and (suite.profile.image_size, suite.profile.batch_size) == (32, 16)
    knn, linear = suite.cells  # the included file's cells first
    assert (knn.params["neighbours"], knn.params["temperature"]) == (7, 0.1)
    assert linear.id == "synthetic-shelf/test-vit/linear"
    source = suite.catalogue.dataset("base-folder").source
    assert source.endswith(str(tmp_path / "shared" / "data"))
    (tmp_path / "shared" / "base.toml").write_text('[suite]\ninclude = ["../pr.toml"]\n')
    with pytest.raises(SuiteError, match=r"makes a cycle: pr\.toml → base\.toml → pr\.toml"):
        load_suite(tmp_path / "pr.toml")


def test_pytest_collects_suite_files_and_no_other_toml(tmp_path):
    import subprocess
    import sys

    (tmp_path / "a.toml").write_text(
        '[suite]\n[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        'strategies = ["knn", "linear"]\n'
    )
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (tmp_path / "shared.toml").write_text("[profile]\nimage_size = 32\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", ".", "-k", "linear"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.stdout.splitlines()[0] == "a.toml::synthetic-products/test-vit/linear", run.stdout
    assert "1/2 tests collected (1 deselected)" in run.stdout
