"""The ann suite: retrieval under approximate indexes, cells declared in ann.toml."""

from pathlib import Path

import pytest

from harness.plugin import load_cells

CELLS = load_cells(Path(__file__).with_name("ann.toml"))


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_cell(cell, shelfbench):
    shelfbench.check(cell)
