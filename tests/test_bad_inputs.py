"""Bad inputs and faults as a user meets them: each gets one clear line (or a visible
warning), never a traceback from deep inside a library and never a silently wrong number."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)
import torch
from PIL import Image

from harness.cell import run_cell
from harness.cli import main
from harness.datasets import open_dataset
from harness.datasets.formats import user_dataset
from harness.datasets.manifests import manifest
from harness.errors import DatasetError, EmbeddingError, ShelfbenchError, SuiteError
from harness.extract import embed_batches
from harness.suite import load_suite

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[1]
TINY = (ROOT / "fixtures" / "suites" / "tiny.toml").read_text()
SHELFBENCH = [sys.executable, "-m", "harness.cli"]  # the console script, from this checkout


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("shelfbench: error: ") and err.count("\n") == 1, err
    return err


def colour_images(root: Path, names: dict[str, tuple[int, int, int]]) -> None:
    for name, colour in names.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), colour).save(root / name)


# Group 1: commands and formats that silently did the wrong thing.


def test_weights_verify_hashes_each_backbone_and_names_a_bad_file(tmp_path, monkeypatch):
    run = subprocess.run(
        [*SHELFBENCH, "weights", "verify", "effnet-lite0", "test-vit"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "effnet-lite0" in run.stdout and "verified" in run.stdout
    assert "unknown dataset" not in run.stdout + run.stderr
    (tmp_path / "effnet-lite0.pth").write_bytes(b"not the weights")
    bad = subprocess.run(
        [*SHELFBENCH, "weights", "verify", "effnet-lite0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SHELFBENCH_WEIGHTS": str(tmp_path)},
    )
    assert bad.returncode == 2
    assert bad.stdout.startswith("invalid  effnet-lite0: weights for effnet-lite0: ")
    assert "delete it and get it again" in bad.stdout and "Traceback" not in bad.stderr


def test_every_other_subcommand_answers_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["weights", "fetch", "effnet-lite0"]) == 0
    assert "ok       effnet-lite0" in capsys.readouterr().out
    assert main(["weights", "fetch", "resnet50"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().out
    assert main(["data", "fetch", "products-10k"]) == 2
    assert "unpack it into" in one_line_error(capsys)
    monkeypatch.setenv("SHELFBENCH_DATA", str(ROOT / "fixtures" / "datasets"))
    assert main(["data", "verify", "food-101"]) == 1
    assert "differs from the release" in capsys.readouterr().out
    assert main(["data", "verify", "synthetic-products"]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["data", "verify", "nope"]) == 2
    assert "unknown dataset 'nope'" in one_line_error(capsys)
    assert main(["weights", "verify", "nope"]) == 2
    assert "unknown backbone 'nope'" in one_line_error(capsys)


def test_webdataset_members_written_with_a_dot_slash_are_read(tmp_path):
    """``tar -C dir -cf shard.tar .`` names every member ./KEY.EXT."""
    samples = tmp_path / "samples"
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)] * 3):
        colour_images(samples / "items", {f"{i:04d}.jpg": colour})
        (samples / "items" / f"{i:04d}.cls").write_text(str(i % 2))
    for split in ("train", "test"):
        with tarfile.open(tmp_path / f"{split}-000.tar", "w") as tar:
            tar.add(samples, arcname=".")
    dataset = user_dataset(
        "dot-shards",
        {"format": "webdataset", "root": ".", "splits": {"train": "train-*", "test": "test-*"}},
        tmp_path,
    ).open()
    assert len(dataset.split("train")) == 6 and dataset.classes == ("0", "1")
    assert dataset.split("train").names[0].decode() == "./items/0000"


def test_a_manifest_row_may_not_leave_the_root_through_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    colour_images(outside, {"secret.png": (1, 2, 3)})
    root = tmp_path / "root"
    colour_images(root, {"a.png": (0, 0, 0), "b.png": (255, 255, 255)})
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "m.csv").write_text("path,label,split\na.png,x,train\nlink.png,y,train\nb.png,y,test\n")
    with pytest.raises(DatasetError, match=r"m\.csv line 3: path 'link\.png' escapes the"):
        manifest("m", root, {"train": "train", "test": "test"}, "m.csv")


# Group 2: bad data gets a clear message, not a traceback and not a perfect score.


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "path,label,split\na.png,x,train\nb.png\n", r"m\.csv line 3: the row's fields"),
        (
            "m.jsonl",
            '{"path": "a.png", "label": "x", "split": "train"}\n'
            '{"path": "b.png", "split": "test"}\n',
            r"m\.jsonl line 2: no value for 'label'",
        ),
        ("m.jsonl", '{"path": "a.png"}\n[1, 2]\n', r"m\.jsonl line 2: a JSONL row is an object"),
        ("m.csv", "path,label,split\na.png,,train\n", r"m\.csv line 2: no value for 'label'"),
    ],
)
def test_a_manifest_row_missing_a_value_names_its_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=message):
        manifest("m", tmp_path, {"train": "train", "test": "test"}, name)


def test_an_empty_split_says_which(tmp_path):
    colour_images(tmp_path / "train" / "red", {"a.png": (255, 0, 0)})
    (tmp_path / "test" / "red").mkdir(parents=True)
    spec = user_dataset("empty-test", {"format": "imagefolder", "root": "."}, tmp_path)
    with pytest.raises(DatasetError, match="dataset 'empty-test': split 'test' is empty"):
        spec.open()


def folder_suite(tmp_path: Path, train: dict, test: dict, strategies: str = '"knn", "linear"'):
    """A suite over an ImageFolder catalogue of plain colour images, class -> colours."""
    for split, classes in (("train", train), ("test", test)):
        for label, colours in classes.items():
            names = {f"{split}/{label}/{i}.png": c for i, c in enumerate(colours)}
            colour_images(tmp_path / "data", names)
    name = f"folder-{tmp_path.name}"
    (tmp_path / "s.toml").write_text(
        f'[profile]\nimage_size = 32\n[datasets.{name}]\nformat = "imagefolder"\n'
        f'root = "data"\n[[cells]]\ndatasets = ["{name}"]\nbackbones = ["test-vit"]\n'
        f"strategies = [{strategies}]\n"
    )
    return load_suite(tmp_path / "s.toml")


REDS = [(255, 0, 0), (250, 10, 0), (240, 0, 20), (230, 5, 5)]
BLUES = [(0, 0, 255), (10, 0, 250), (0, 20, 240), (5, 5, 230)]


def test_a_one_class_cell_is_refused_instead_of_scoring_1(tmp_path):
    suite = folder_suite(tmp_path, {"red": REDS}, {"red": REDS})
    with pytest.raises(DatasetError, match="has the one class 'red', so every metric"):
        run_cell(suite.cells[0], tmp_path / "cache")


def test_test_classes_missing_from_train_warn_in_the_row_and_the_terminal(pytester, write_suite):
    folder_suite(pytester.path, {"red": REDS, "blue": BLUES}, {"red": REDS, "green": [(0, 255, 0)]})
    (pytester.path / "suite.toml").write_text((pytester.path / "s.toml").read_text())
    write_suite((pytester.path / "s.toml").read_text())
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["warning *knn: 1 test class(es) have no train item (e.g. 'green'): their 1 of 5*"]
    )
    cells = json.loads((pytester.path / "reports" / "latest.json").read_text())["cells"]
    assert all("no train item" in c["warnings"][0] for c in cells)
    assert "## Warnings" in (pytester.path / "reports" / "latest.md").read_text()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace('backbones = ["test-efficientnet"]\n', ""),
            "[[cells]] number 1: the key 'backbones' is missing",
        ),
        (
            lambda t: t.replace('backbones = ["test-efficientnet"]', 'backbones = "test-vit"'),
            '[[cells]] number 1 backbones = "test-vit": must be a non-empty list of non-empty',
        ),
        (
            lambda t: (
                t + '[floors."synthetic-products/test-efficientnet/knn"]\n'
                'accuracy = { floor = "0.5", measured = 0.6, date = "2026-11-28", machine = "m" }\n'
            ),
            'knn"] accuracy: floor = "0.5": must be a number',
        ),
        (lambda t: t.replace("image_size = 64", 'image_size = "64"'), 'image_size = "64": must'),
        (lambda t: t + "[strategy.knn]\nneighbours = 2.5\n", "neighbours = 2.5: must be an"),
        (lambda t: t + "[cell]\nx = 1\n", "unknown table [cell]"),
    ],
)
def test_a_suite_mistake_names_the_key_and_the_file(tmp_path, edit, message):
    path = tmp_path / "s.toml"
    path.write_text(edit(TINY))
    with pytest.raises(SuiteError) as raised:
        load_suite(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_cell_that_raises_shows_the_error_not_the_code(pytester, write_suite, monkeypatch):
    import harness.cell

    def boom(cell, cache, recompute=False):
        raise ValueError("zero-size array to reduction operation maximum")

    monkeypatch.setattr(harness.cell, "run_cell", boom)
    write_suite(TINY)
    result = pytester.runpytest("-k", "knn")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["failed synthetic-products/test-efficientnet/knn: ValueError: zero-size array*"]
    )


# Group 3: the cache proves what it serves.


def part_of(cache: Path, split_key: str) -> list[Path]:
    keys = {p.parent: json.loads(p.read_text()) for p in cache.glob("embeddings/*/*/key.json")}
    return sorted(
        part
        for entry, key in keys.items()
        if key.get("split") == split_key and "kind" not in key
        for part in entry.glob("part-*.npz")
    )


@pytest.mark.parametrize("fault", ["changed", "swapped", "corrupt"])
def test_a_tampered_cache_part_is_recomputed_never_served(tmp_path, capfd, fault):
    cell = load_suite(ROOT / "fixtures" / "suites" / "tiny.toml").cells[1]  # linear
    cache = tmp_path / "cache"
    honest = run_cell(cell, cache)
    (train,), (test,) = part_of(cache, "train"), part_of(cache, "test")
    if fault == "changed":
        with np.load(test) as data:
            fields = dict(data)
        fields["vectors"] = np.random.default_rng(0).permutation(fields["vectors"])
        with test.open("wb") as f:
            np.savez(f, **fields)
    elif fault == "swapped":  # a valid part, from the train entry
        test.write_bytes(train.read_bytes())
    else:
        test.write_bytes(test.read_bytes()[:100])
    capfd.readouterr()
    again = run_cell(cell, cache)
    assert again.metrics == honest.metrics and again.cache == "miss"
    err = capfd.readouterr().err
    assert err.count(f"shelfbench: cache part {test}") == 1 and "computed again" in err


def test_nan_from_a_model_is_divergence_not_unreadable_images():
    data = open_dataset("synthetic-products").split("test")

    class Diverged(torch.nn.Module):
        num_features = 4

        def forward(self, x):
            return torch.full((len(x), 4), float("nan"))

    from harness.backbones import BACKBONES

    pre = BACKBONES.get("test-vit").preprocess.resized(32, 1.0)
    with pytest.raises(EmbeddingError, match="output NaN or inf for 8 of 8 inputs: it diverged"):
        list(embed_batches(Diverged(), data, np.arange(8), pre, 8, "embed"))


def test_a_fine_tune_that_diverges_fails_in_one_line(tmp_path):
    toml = TINY.replace('strategies = ["knn", "linear"]', 'strategies = ["finetune"]')
    (tmp_path / "s.toml").write_text(
        toml + "[strategy.finetune]\nepochs = 1\nlr = 1e12\nhead_lr = 1e12\n"
    )
    (cell,) = load_suite(tmp_path / "s.toml").cells
    with pytest.raises(
        ShelfbenchError,
        match=r"\(epoch 1, by step \d+; lr 1e\+12, head_lr 1e\+12\) diverged: "
        r"the mean loss is (nan|inf); lower lr",
    ):
        run_cell(cell, tmp_path / "cache")


def test_runs_that_start_together_keep_separate_histories(tmp_path):
    from harness.report_files import write_reports
    from harness.row import CellRow

    row = CellRow("d/b/s", "d", "b", "s")
    provenance = {"started": "2026-11-28T10:00:00+00:00"}
    write_reports(tmp_path, provenance, [row])
    write_reports(tmp_path, provenance, [CellRow("d/b/s", "d", "b", "s", outcome="failed")])
    runs = sorted((tmp_path / "runs").iterdir())
    assert [p.name for p in runs] == ["2026-11-28T100000+0000", "2026-11-28T100000+0000-1"]
    outcomes = [json.loads((p / "latest.json").read_text())["cells"][0]["outcome"] for p in runs]
    assert outcomes == ["passed", "failed"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("text", ["{}", "[1, 2]", '{"cells": [{"metrics": {}}]}'])
def test_a_baseline_that_is_not_a_run_exits_2_in_one_line(tmp_path, capsys, text):
    (tmp_path / "b.json").write_text(text)
    np.savez(tmp_path / "b.items.npz")
    assert main(["compare", str(tmp_path / "b.json"), str(tmp_path / "b.json")]) == 2
    assert "is not a shelfbench run" in one_line_error(capsys)


def test_a_corrupt_items_file_and_a_comparison_of_nothing_exit_2(tmp_path, capsys):
    run = {"cells": [{"id": "a/b/knn", "outcome": "skipped"}]}
    (tmp_path / "b.json").write_text(json.dumps(run))
    (tmp_path / "b.items.npz").write_bytes(b"PK\x03\x04 broken")
    assert main(["compare", str(tmp_path / "b.json"), str(tmp_path / "b.json")]) == 2
    assert "cannot read run" in one_line_error(capsys)
    np.savez(tmp_path / "b.items.npz")
    assert main(["compare", str(tmp_path / "b.json"), str(tmp_path / "b.json")]) == 2
    assert "nothing was compared" in one_line_error(capsys)


def test_a_cell_missing_from_the_baseline_is_warned_about(pytester, write_suite):
    write_suite(TINY.replace('strategies = ["knn", "linear"]', 'strategies = ["knn"]'))
    baseline = pytester.path / "b.json"
    pytester.runpytest("--shelf-baseline", str(baseline), "--shelf-update-baseline")
    write_suite(TINY)
    result = pytester.runpytest("--shelf-baseline", str(baseline))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["warning *linear: not in the baseline *b.json, so not gated*"])


def integer_shards(root: Path, labels: list[int]) -> None:
    """WebDataset shards whose samples carry integer .cls labels."""
    samples = root / "samples"
    for i, label in enumerate(labels):
        colour_images(samples / "items", {f"{i:04d}.jpg": (20 * label, 0, 0)})
        (samples / "items" / f"{i:04d}.cls").write_text(str(label))
    for split in ("train", "test"):
        with tarfile.open(root / f"{split}-000.tar", "w") as tar:
            tar.add(samples, arcname=".")


SHARDS = {"format": "webdataset", "root": ".", "splits": {"train": "train-*", "test": "test-*"}}


def test_class_names_name_integer_labels_in_their_integer_order(tmp_path):
    """Labels 0..10 sort as integers (10 after 9, not after 1), and line k names label k,
    so zero-shot prompts read 'a photo of a shirt.', not 'a photo of a 3.'."""
    integer_shards(tmp_path, [3, 10, 9, 0])
    names = [f"name{k}" for k in range(11)]
    (tmp_path / "classnames.txt").write_text("\n".join(names) + "\n")
    from_file = user_dataset("named", {**SHARDS, "class_names": "classnames.txt"}, tmp_path)
    assert from_file.open().classes == ("name0", "name3", "name9", "name10")
    inline = user_dataset("inline", {**SHARDS, "class_names": names}, tmp_path)
    assert inline.open().classes == ("name0", "name3", "name9", "name10")
    assert user_dataset("plain", SHARDS, tmp_path).open().classes == ("0", "3", "9", "10")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a", "b"], r"has 2 names, but the labels run from 0 to 10; line k names label k"),
        ("absent.txt", r"class_names .*absent.txt does not exist"),
        (3, "class_names = 3: must be a non-empty string or a non-empty list"),
    ],
)
def test_class_names_that_do_not_fit_are_one_line(tmp_path, names, message):
    integer_shards(tmp_path, [0, 10])
    with pytest.raises(DatasetError, match=message) as caught:
        user_dataset("bad-names", {**SHARDS, "class_names": names}, tmp_path).open()
    assert "\n" not in str(caught.value)
