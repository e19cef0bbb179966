"""The smoke suite: cells declared in smoke.toml."""

from pathlib import Path

import pytest

from harness.plugin import load_cells

CELLS = load_cells(Path(__file__).with_name("smoke.toml"))


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_cell(cell, shelfbench):
    shelfbench.check(cell)
