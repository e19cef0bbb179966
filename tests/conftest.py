"""Unit tests never touch a model hub and never share the user's embedding cache."""

import os
from collections.abc import Callable
from pathlib import Path

import faiss  # noqa: F401  (loaded once: pytester's in-process runs re-import what they load,
import pytest  # and a second import of faiss's extension module segfaults)
from hypothesis import settings

os.environ["HF_HUB_OFFLINE"] = "1"
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SHELFBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))


CELLS_MODULE = """
from pathlib import Path
import pytest
from harness.plugin import load_cells

@pytest.mark.parametrize("cell", load_cells(Path(__file__).with_name("suite.toml")), ids=str)
def test_cell(cell, shelfbench):
    shelfbench.check(cell)
"""


@pytest.fixture
def write_suite(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """Write ``suite.toml`` and a test module that runs its cells into pytester's directory
    (for test modules that load the ``pytester`` plugin)."""
    pytester = request.getfixturevalue("pytester")

    def write(toml: str) -> Path:
        pytester.makefile(".toml", suite=toml)
        pytester.makepyfile(test_cells=CELLS_MODULE)
        return pytester.path

    return write
