"""The shelfbench command: export reproduces a cell's numbers, errors are one line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cell import run_cell
from harness.cli import main
from harness.suite import load_suite

ROOT = Path(__file__).parents[1]
TINY = ROOT / "fixtures" / "suites" / "tiny.toml"


def test_export_writes_what_the_cell_used_and_recall_recomputes(tmp_path, capsys):
    cell = load_suite(TINY).cell("synthetic-products/test-efficientnet/knn")
    result = run_cell(cell, tmp_path / "cache")
    out = tmp_path / "export"
    assert (
        main(
            [
                "export",
                cell.id,
                "--out",
                str(out),
                "--suite",
                str(TINY),
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    train, test = np.load(out / "train.npy"), np.load(out / "test.npy")
    train_labels, test_labels = np.load(out / "train_labels.npy"), np.load(out / "test_labels.npy")
    assert (len(train), len(test)) == (result.n_train, result.n_test)
    # An independent recomputation: plain numpy cosine similarity, no harness code.
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    nearest = np.argmax(test @ train.T, axis=1)
    recall_at_1 = np.mean(train_labels[nearest] == test_labels)
    assert recall_at_1 == pytest.approx(result.metrics["recall@1"], abs=1e-6)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["cell"] == cell.id and set(meta["keys"]) == {"train", "test"}


def test_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    assert (
        main(["export", "nope/x/knn", "--out", str(tmp_path), "--suites-dir", str(ROOT / "suites")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("shelfbench: error: no suite in") and err.count("\n") == 1


def test_a_cell_two_suites_declare_is_found_by_its_node_id(tmp_path, capsys):
    suites = tmp_path / "suites"
    suites.mkdir()
    for name in ("a", "b"):
        (suites / f"{name}.toml").write_text(
            TINY.read_text().replace('name = "tiny"', f'name = "{name}"')
        )
    cell = "synthetic-products/test-efficientnet/knn"
    out = tmp_path / "export"
    args = ["--out", str(out), "--suites-dir", str(suites), "--cache", str(tmp_path / "c")]
    assert main(["export", cell, *args]) == 2
    err = capsys.readouterr().err
    assert f"({suites / 'a.toml'}, {suites / 'b.toml'})" in err and err.count("\n") == 1
    assert main(["export", f"{suites / 'b.toml'}::{cell}", *args]) == 0
    assert (out / "train.npy").is_file()


def test_list_prints_the_registries(capsys):
    for what, name in [
        ("datasets", "fashion-mnist"),
        ("backbones", "effnet-lite0"),
        ("strategies", "linear"),
    ]:
        assert main(["list", what]) == 0
        assert name in capsys.readouterr().out


def test_collecting_the_suites_imports_no_model_library():
    code = (
        "import sys, pytest\n"
        "assert pytest.main(['--collect-only', '-q', 'suites/']) == 0\n"
        "print(sorted(m for m in ('torch', 'timm', 'open_clip', 'torchvision') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_list_backbones_filters_by_family_and_availability(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["list", "backbones", "--family", "ssl"]) == 0
    out = capsys.readouterr().out
    assert "dinov2-base" in out and "effnet-lite0" not in out and "missing" in out
    assert main(["list", "backbones", "--available"]) == 0
    out = capsys.readouterr().out
    assert "effnet-lite0" in out and "package" in out and "resnet50" not in out
