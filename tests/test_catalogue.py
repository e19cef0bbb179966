"""A suite owns what it declares: two suites in one run may each declare a dataset and a
backbone of the same name, differently, and each cell runs, reports, gates and keeps its
history through its own suite's. Built-in registries are frozen; a test extends them for
a while. And the package's modules import one another without a circle."""

import ast
import graphlib
import json
from pathlib import Path

import numpy as np
import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)
import torch  # noqa: F401
from PIL import Image

from harness.baseline import load_run
from harness.datasets import DATASETS
from harness.history import from_reports
from harness.suite import load_suite

pytest_plugins = ["pytester"]

SUITE = """[suite]
name = "{name}"
[profile]
image_size = 32
[datasets.catalogue]
format = "imagefolder"
root = "{name}-data"
[backbones.encoder]
timm = "{model}"
weights = "random"
family = "supervised"
[[cells]]
datasets = ["catalogue"]
backbones = ["encoder"]
strategies = ["knn"]
"""
CELL = "catalogue/encoder/knn"


def colour_folders(root: Path, classes: int, per_class: int, seed: int) -> None:
    """An ImageFolder catalogue of ``classes`` noisy colours, ``per_class`` per split."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(classes, 3))
    for split in ("train", "test"):
        for label, colour in enumerate(colours):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                noise = rng.integers(-40, 40, size=(32, 32, 3))
                pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_two_suites_declare_the_same_names_differently_in_one_run(pytester):
    colour_folders(pytester.path / "a-data", classes=3, per_class=4, seed=1)
    colour_folders(pytester.path / "b-data", classes=5, per_class=6, seed=2)
    pytester.makefile(".toml", a=SUITE.format(name="a", model="test_vit"))
    pytester.makefile(".toml", b=SUITE.format(name="b", model="test_efficientnet"))
    suites = [load_suite(pytester.path / f"{n}.toml") for n in "ab"]
    assert [s.cells[0].id for s in suites] == [CELL, CELL]
    assert [s.catalogue.backbone("encoder").model for s in suites] == [
        "test_vit",
        "test_efficientnet",
    ]

    pytester.runpytest("--shelf-update-baseline").assert_outcomes(passed=2)
    rows = {r["node"]: r for r in json.loads(Path("reports/latest.json").read_text())["cells"]}
    assert set(rows) == {f"a.toml::{CELL}", f"b.toml::{CELL}"}
    a, b = rows[f"a.toml::{CELL}"], rows[f"b.toml::{CELL}"]
    assert (a["suite"], a["n_test"], b["suite"], b["n_test"]) == ("a", 12, "b", 30)
    assert a["dataset_fingerprint"] != b["dataset_fingerprint"]
    assert a["embedding_keys"]["test"] != b["embedding_keys"]["test"]
    baseline = load_run(Path("reports/baseline.json"))
    assert set(baseline.rows) == set(baseline.items) == set(rows)

    # Each cell is gated against its own suite's baseline row, served by the outcome cache.
    pytester.runpytest("--shelf-baseline", "reports/baseline.json").assert_outcomes(passed=2)
    again = {r["node"]: r for r in json.loads(Path("reports/latest.json").read_text())["cells"]}
    for node, row in again.items():
        (comparison,) = row["baseline"]
        assert comparison["old"] == comparison["new"] == rows[node]["metrics"]["accuracy"]
        assert comparison["against"].startswith(f"{node} in ") and row["result_cache"] == "hit"
    history = from_reports(Path("reports"))
    assert {node: len(points) for node, points in history.items()} == {n: 2 for n in rows}
    html = Path("reports/latest.html").read_text()
    assert html.count("No gallery") == 0 and html.count("retrieves</h3>") == 2
    markdown = Path("reports/latest.md").read_text()
    assert "## catalogue (a)" in markdown and "## catalogue (b)" in markdown


def test_a_suite_may_not_give_a_built_in_name_another_meaning(tmp_path):
    (tmp_path / "s.toml").write_text(
        '[datasets.synthetic-products]\nformat = "imagefolder"\nroot = "data"\n'
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        'strategies = ["knn"]\n'
    )
    with pytest.raises(Exception, match="'synthetic-products' is a built-in dataset"):
        load_suite(tmp_path / "s.toml")


def test_built_in_registries_are_frozen_and_a_test_extends_them_for_a_while():
    spec = DATASETS.get("synthetic-products")
    with pytest.raises(RuntimeError, match="frozen"):
        DATASETS.add(spec)
    other = type(spec)(**{**vars(spec), "name": "for-a-while"})
    with DATASETS.extended(other):
        assert DATASETS.get("for-a-while") is other
    assert "for-a-while" not in DATASETS


def imports(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` and the package modules it imports, at any depth of its
    code (a function's lazy import and a TYPE_CHECKING import count too)."""
    names = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        own = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = own.split(".")[: len(own.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def test_no_module_of_the_harness_imports_one_that_imports_it_back():
    graph = imports(Path(__file__).parents[1] / "harness")
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"an import circle: {' → '.join(exc.args[1])}; move the shared type down")


def test_the_circle_check_finds_a_circle(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (tmp_path / "pkg" / "b.py").write_text("from . import a\n")
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(imports(tmp_path / "pkg")).static_order())
