"""pytest collects suite files itself: a ``*.toml`` file with a ``[suite]`` table is a
suite, and each of its cells a test item (pytest's documented way for non-Python tests).
Other TOML files (``pyproject.toml``, a shared ``include`` file) are never collected.

An item's name is its cell id (``fashion-mnist/effnet-lite0/knn``), so ``-k`` selects
cells by any part of it; markers add the backbone's family and kind, and ``clip`` for
text-image backbones. Collecting imports no torch, timm or open_clip.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness.bench import CELL_PROPERTY, Bench
from harness.errors import ShelfbenchError

SUITE_TABLE = re.compile(r"^\s*\[\s*suite\s*\]", re.M)


def is_suite_file(path: Path) -> bool:
    """A TOML file with a top-level ``[suite]`` table (one that does not parse counts when
    it has the line ``[suite]``, so its error is shown)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        return isinstance(tomllib.loads(text).get("suite"), dict)
    except tomllib.TOMLDecodeError:
        return bool(SUITE_TABLE.search(text))


class SuiteFileError(Exception):
    """A suite file that does not load: reported as its one line."""


class SuiteFile(pytest.File):
    def collect(self) -> Any:
        from harness.suite import load_suite

        try:
            cells = load_suite(self.path).cells
        except ShelfbenchError as exc:
            raise SuiteFileError(str(exc)) from None
        for cell in cells:
            yield CellItem.from_parent(self, name=cell.id, cell=cell)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, SuiteFileError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def label(item: pytest.Item, cell: Any) -> None:
    """A cell's item: its markers, and what the report needs to know of it before it runs."""
    from harness.backbones.libraries import has_text

    spec = cell.backbone_spec
    markers = ["shelfbench", spec.family, spec.kind] + (["clip"] if has_text(spec) else [])
    for marker in markers:
        item.add_marker(marker)
    static = {
        "id": cell.id,
        "dataset": cell.dataset,
        "backbone": cell.backbone,
        "strategy": cell.strategy,
        "suite": cell.suite,
        "node": cell.node(item.config.rootpath),
    }
    item.user_properties.append((CELL_PROPERTY, json.dumps(static)))


class CellItem(pytest.Item):
    """One benchmark cell of a suite file."""

    def __init__(self, *, cell: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cell = cell
        label(self, cell)

    def runtest(self) -> None:
        Bench(self.config, self).check(self.cell)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"cell {self.cell.id}"
