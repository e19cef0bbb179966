"""The zoo suite: cells declared in zoo.toml."""

from pathlib import Path

import pytest

from harness.plugin import load_cells

CELLS = load_cells(Path(__file__).with_name("zoo.toml"))


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_cell(cell, shelfbench):
    shelfbench.check(cell)
