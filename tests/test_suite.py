"""Suite files: cells, ids and order, parameters, floors."""

from pathlib import Path

import pytest

from harness.errors import SuiteError
from harness.suite import load_suite

ROOT = Path(__file__).parents[1]


def test_default_suite_declares_the_embedded_default_cells():
    suite = load_suite(ROOT / "suites" / "default.toml")
    assert [c.id for c in suite.cells] == [
        "fashion-mnist/effnet-lite0/knn",
        "fashion-mnist/effnet-lite0/linear",
    ]
    for cell in suite.cells:
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
    assert suite.cells[0].params["max_iter"] == 30
    assert suite.name == "s"


def test_unknown_strategy_parameter_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        'strategies = ["knn"]\n[strategy.knn]\nneighbors = 5\n'
    )
    with pytest.raises(SuiteError, match=r"no parameter.*neighbors.*neighbours"):
        load_suite(path)


def test_zeroshot_needs_a_text_image_backbone(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        'strategies = ["zeroshot"]\n'
    )
    with pytest.raises(SuiteError, match="zeroshot needs a text tower; test-vit"):
        load_suite(path)
