"""Embeddings a team already has: a vectors backbone that reads a model backbone's
`shelfbench export --format parquet` scores exactly what the model does, an [upgrade]
between them passes with difference 0, and each mistake in a table is one line."""

import json
from pathlib import Path

import numpy as np
import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from harness.cell import run_cell  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.errors import EmbeddingError, SuiteError  # noqa: E402
from harness.suite import load_suite  # noqa: E402

pytest_plugins = ["pytester"]

CELLS = """
[profile]
image_size = 32
batch_size = 64

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-efficientnet"]
strategies = ["knn", "linear"]
"""


def exported(tmp_path: Path) -> Path:
    """test-efficientnet's embeddings of the knn cell's items, as a vectors table."""
    (tmp_path / "model.toml").write_text("[suite]\n" + CELLS)
    out = tmp_path / "prod.parquet"
    cell = "synthetic-products/test-efficientnet/knn"
    suite = str(tmp_path / "model.toml")
    assert main(["export", cell, "--suite", suite, "--out", str(out), "--format", "parquet"]) == 0
    return out


def vectors_suite(table: Path, name: str = "prod") -> str:
    return (
        f'[suite]\n[backbones.{name}]\nvectors = "{table}"\n'
        + CELLS.replace(
            'backbones = ["test-efficientnet"]', f'backbones = ["{name}", "test-efficientnet"]'
        )
        + f'\n[upgrade]\nincumbent = "{name}"\ncandidate = "test-efficientnet"\n'
    )


def test_an_export_reads_back_as_a_backbone_and_the_upgrade_between_them_is_zero(
    tmp_path, pytester
):
    table = exported(tmp_path)
    data = pq.read_table(table)
    assert data.column_names == ["id", "split", "label", "vector"]
    assert data.column("id")[0].as_py().startswith("train:")
    pytester.makefile(".toml", suite=vectors_suite(table, "prod-export"))
    result = pytester.runpytest()
    result.assert_outcomes(passed=4)
    rows = {
        r["id"]: r
        for r in json.loads((pytester.path / "reports" / "latest.json").read_text())["cells"]
    }
    for strategy in ("knn", "linear"):
        prod = rows[f"synthetic-products/prod-export/{strategy}"]
        model = rows[f"synthetic-products/test-efficientnet/{strategy}"]
        assert prod["metrics"] == model["metrics"]
        assert {c["diff"] for c in model["upgrade"]} == {0.0}
        assert prod["precision"] == "vectors" and prod["cost"]["gflops_per_image"] is None
    assert len(prod["weights_sha256"]) == 64  # the table's hash stands for the weights


def write(path: Path, ids: list[str], vectors: list) -> Path:
    pq.write_table(pa.table({"id": ids, "vector": vectors}), path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "missing",
            r"of the 320 train items of synthetic-products have no vector in .* \(e\.g\. id",
        ),
        ("width", r"the vector of id 'train:1' has 3 numbers, the first row's 4"),
        ("nan", r"1 rows hold NaN or inf, e\.g\. id 'train:2'"),
        ("twice", r"id 'train:0' is in rows 1 and 2; ids are unique"),
    ],
)
def test_a_table_mistake_is_one_line(tmp_path, case, message):
    ids = [f"train:{i}" for i in range(320)] + [f"test:{i}" for i in range(96)]
    vectors = np.random.default_rng(0).normal(size=(len(ids), 4)).tolist()
    if case == "missing":
        ids, vectors = ids[5:], vectors[5:]
    elif case == "width":
        vectors[1] = vectors[1][:3]
    elif case == "nan":
        vectors[2][0] = float("nan")
    else:
        ids[1] = ids[0]
    table = write(tmp_path / f"{case}.parquet", ids, vectors)
    (tmp_path / "s.toml").write_text(vectors_suite(table, f"prod-{case}"))
    with pytest.raises(EmbeddingError, match=message) as caught:
        run_cell(load_suite(tmp_path / "s.toml").cells[0], tmp_path / "cache")
    assert "\n" not in str(caught.value)


def test_extra_ids_and_a_changed_file_are_warnings(tmp_path):
    ids = [f"train:{i}" for i in range(320)] + [f"test:{i}" for i in range(96)]
    vectors = np.random.default_rng(0).normal(size=(len(ids), 4))
    table = write(tmp_path / "t.parquet", [*ids, "elsewhere:1"], [*vectors.tolist(), [0, 0, 0, 1]])
    (tmp_path / "s.toml").write_text(vectors_suite(table, "prod-extra"))
    cell = load_suite(tmp_path / "s.toml").cells[0]
    first = run_cell(cell, tmp_path / "cache")
    assert any("1 ids in" in w and "'elsewhere:1'" in w for w in first.warnings)
    write(table, [*ids, "elsewhere:1"], [*(vectors * 2).tolist(), [0, 0, 0, 1]])
    again = run_cell(cell, tmp_path / "cache")
    assert any("changed since it was last read" in w for w in again.warnings)
    assert again.weights_sha256 != first.weights_sha256


def test_strategies_that_need_the_model_are_refused_at_collection(tmp_path):
    table = write(tmp_path / "t.parquet", ["train:0"], [[0.0, 1.0]])
    for strategy in ("finetune", "partial:1", "cross:synthetic-shelf"):
        (tmp_path / "s.toml").write_text(
            f'[backbones.prod-refused]\nvectors = "{table}"\n[[cells]]\n'
            f'datasets = ["synthetic-products"]\nbackbones = ["prod-refused"]\n'
            f'strategies = ["{strategy}"]\n'
        )
        with pytest.raises(SuiteError, match=f"{strategy} needs a model to run; prod-refused is"):
            load_suite(tmp_path / "s.toml")
    (tmp_path / "s.toml").write_text(
        f'[backbones.prod-refused2]\nvectors = "{table}"\nimage_size = 224\n'
    )
    with pytest.raises(SuiteError, match="image_size has no meaning for them"):
        load_suite(tmp_path / "s.toml")
