"""Unit tests never touch a model hub and never share the user's embedding cache."""

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# faiss loaded once: pytester's in-process runs re-import what they load, and a second
# import of faiss's extension module segfaults. A GPU machine (torch ranks) may lack it.
with contextlib.suppress(ImportError):
    import faiss  # noqa: F401

os.environ["HF_HUB_OFFLINE"] = "1"
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SHELFBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    # A run under $CI fails cells it cannot run; tests that skip on purpose set it
    # themselves, so CI and a laptop run the same tests.
    monkeypatch.delenv("CI", raising=False)


@pytest.fixture
def real_fashion_mnist() -> None:
    """Skips the test where Debian's Fashion-MNIST, the one dataset the tests read as
    shipped, is not installed (CI installs it)."""
    from harness.datasets import fashion_mnist

    if not fashion_mnist.complete(fashion_mnist.DEBIAN_DIR):
        pytest.skip("apt-get install dataset-fashion-mnist")


@pytest.fixture
def extend() -> Iterator[Callable[..., None]]:
    """``extend(DATASETS, spec, ...)``: entries in a frozen registry for this test only."""
    with contextlib.ExitStack() as stack:
        yield lambda registry, *entries: stack.enter_context(registry.extended(*entries))


@pytest.fixture
def write_suite(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """Write ``suite.toml`` (given a ``[suite]`` table if it has none, so pytest collects
    it) into pytester's directory (for test modules that load the ``pytester`` plugin)."""
    pytester = request.getfixturevalue("pytester")

    def write(toml: str) -> Path:
        if not re.search(r"^\[suite\]", toml, re.M):
            toml = '[suite]\nname = "suite"\n' + toml
        pytester.makefile(".toml", suite=toml)
        return pytester.path

    return write
