"""Every user path is the kind of thing it claims to be before work starts, and shelfbench
never writes over a file it did not write: each case is one line, with no traceback."""

import json
import os
from pathlib import Path

import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)
import torch
from safetensors.torch import save_file

from harness.backbones import BACKBONES
from harness.backbones.weights import check_checkpoint
from harness.cli import main
from harness.datasets.formats import user_dataset
from harness.datasets.manifests import read_manifest
from harness.errors import DatasetError, PathError, WeightsError
from harness.ownership import check_milvus_store
from harness.suite import load_suite

pytest_plugins = ["pytester"]
ROOT = Path(__file__).parents[1]
TINY = (ROOT / "fixtures" / "suites" / "tiny.toml").read_text()


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("shelfbench: error: ") and err.count("\n") == 1, err
    return err


def pipe(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_a_named_pipe_is_refused_before_anything_opens_it(tmp_path):
    with pytest.raises(DatasetError, match=r"manifest .*m\.csv is a named pipe, not a file"):
        read_manifest(pipe(tmp_path / "m.csv"))
    pipe(tmp_path / "names.txt")
    table = {"format": "imagefolder", "root": ".", "class_names": "names.txt"}
    with pytest.raises(DatasetError, match=r"class_names .*names\.txt is a named pipe"):
        user_dataset("piped", table, tmp_path)
    (tmp_path / "s.toml").write_text(
        f'[backbones.piped]\ntimm = "resnet18"\nweights = "{pipe(tmp_path / "w.pt")}"\n'
    )
    with pytest.raises(Exception, match=r"\[backbones\.piped\] weights .*w\.pt is a named pipe"):
        load_suite(tmp_path / "s.toml")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.safetensors", b"", "is not a whole safetensors file .*header too small"),
        ("cut.safetensors", "half", "is not a whole safetensors file .*not fully covered"),
        ("text.pt", b"model weights, honest", "is not a checkpoint"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "half":
        save_file({"a": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=message) as caught:
        check_checkpoint(path, "mine")
    assert "\n" not in str(caught.value)


def test_weights_verify_says_what_pins_a_file_and_refuses_what_does_not_load(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SHELFBENCH_WEIGHTS", str(tmp_path))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "test-vit.pt")
    assert main(["weights", "verify", "test-vit"]) == 0
    assert "unverified: no recorded hash" in capsys.readouterr().out
    (tmp_path / "test-vit.pt").write_text("not a checkpoint at all")
    assert main(["weights", "verify", "test-vit"]) == 2
    assert "is not a checkpoint" in capsys.readouterr().out
    import pickle

    (tmp_path / "test-vit.pt").write_bytes(pickle.dumps(object))  # a pickle, not tensors
    assert main(["weights", "verify", "test-vit"]) == 2
    assert "not a weights-only checkpoint" in capsys.readouterr().out


def test_an_hf_hub_id_that_is_no_repo_id_is_one_line(tmp_path, capsys):
    (tmp_path / "s.toml").write_text('[backbones.hub]\ntimm = "resnet18"\nhf_hub = "a/b/c"\n')
    assert main(["check", str(tmp_path / "s.toml")]) == 2
    assert '[backbones.hub] hf_hub = "a/b/c": must be a Hugging Face repo id' in one_line(capsys)


def test_export_refuses_a_file_or_a_foreign_folder_before_embedding(tmp_path, capsys):
    tiny = ROOT / "fixtures" / "suites" / "tiny.toml"
    cell = ["export", "synthetic-products/test-efficientnet/knn", "--suite", str(tiny)]
    (tmp_path / "file").write_text("mine")
    assert main([*cell, "--out", str(tmp_path / "file")]) == 2
    assert "must be a directory, but it is a regular file" in one_line(capsys)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert main([*cell, "--out", str(tmp_path / "notes")]) == 2
    assert "holds something shelfbench did not write" in one_line(capsys)
    assert not (Path(os.environ["SHELFBENCH_CACHE"]) / "embeddings").exists()


def test_a_milvus_uri_that_is_a_users_file_is_refused(tmp_path):
    (tmp_path / "notes.db").write_text("my sqlite database")
    with pytest.raises(PathError, match="holds something shelfbench did not write"):
        check_milvus_store(str(tmp_path / "notes.db"), "[strategy.knn]")
    check_milvus_store(str(tmp_path / "new.db"), "[strategy.knn]")  # a new store is fine
    (tmp_path / "s.toml").write_text(
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        f'strategies = ["knn"]\n[strategy.knn]\nindex = "milvus:HNSW"\n'
        f'options = {{ uri = "{tmp_path / "notes.db"}" }}\n'
    )
    with pytest.raises(PathError, match=r"knn\] options\.uri .*notes\.db holds something"):
        load_suite(tmp_path / "s.toml")


def test_a_reports_directory_that_is_a_file_fails_before_any_cell(pytester, write_suite):
    write_suite(TINY)
    (pytester.path / "out").write_text("a file")
    result = pytester.runpytest("--shelf-reports", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: shelfbench: --shelf-reports out must be a directory*"])
    assert "passed" not in result.stdout.str()


def test_a_reports_file_shelfbench_did_not_write_is_kept(pytester, write_suite):
    write_suite(TINY)
    (pytester.path / "out").mkdir()
    (pytester.path / "out" / "latest.md").write_text("# my notes\n")
    result = pytester.runpytest("--shelf-reports", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*out/latest.md holds something shelfbench did not write*"])
    assert (pytester.path / "out" / "latest.md").read_text() == "# my notes\n"


def test_update_baseline_never_writes_over_a_suite_file(pytester, write_suite):
    suite = write_suite(TINY) / "suite.toml"
    before = suite.read_text()
    result = pytester.runpytest("--shelf-baseline", str(suite), "--shelf-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*suite.toml holds something shelfbench did not write; a baseline is written only*"]
    )
    assert suite.read_text() == before
    result = pytester.runpytest("--shelf-baseline", "b.json", "--shelf-update-baseline")
    result.assert_outcomes(passed=2)
    again = pytester.runpytest("--shelf-baseline", "b.json", "--shelf-update-baseline")
    again.assert_outcomes(passed=2)  # over a run it wrote: fine
    assert json.loads((pytester.path / "b.json").read_text())["schema"] == 2
    assert BACKBONES.get("test-efficientnet")
