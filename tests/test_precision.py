"""Precision is a declared, recorded choice; the data path hands the model the same pixels;
a cell embeds only the splits its strategy reads."""

from pathlib import Path

import numpy as np
import pytest
import torch

from harness import extract, runtime
from harness.backbones import BACKBONES, resolve
from harness.cell import run_cell
from harness.datasets import open_dataset
from harness.embeddings import load_model
from harness.errors import EmbeddingError, ShelfbenchError
from harness.extract import embed_batches, load_batches, to_tensor, transform
from harness.runtime import resolve_precision
from harness.suite import load_suite

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("backbone", ["test-efficientnet", "test-vit"])
def test_bf16_and_fp32_embeddings_agree(backbone):
    spec = BACKBONES.get(backbone)
    model = load_model(spec, resolve(spec))
    pre = spec.preprocess.resized(64, 1.0)
    data = open_dataset("synthetic-products").split("test")
    rows = np.arange(32)
    fp32, bf16 = (
        np.concatenate([v for _, v in embed_batches(model, data, rows, pre, 16, "t", p)])
        for p in ("fp32", "bf16")
    )
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() >= 0.999
    assert not np.array_equal(fp32, bf16)  # bf16 really ran


@pytest.mark.parametrize("name", ["synthetic-products", "products-10k"])
def test_the_model_gets_the_same_pixels_as_before(name, monkeypatch):
    """uint8 batches from the loader (arrays resized by weights on the device, files decoded
    and resized by PIL), normalised into a reused buffer, equal the reference:
    (transform(image) / 255 − mean) / std per image, in float32."""
    monkeypatch.setenv("SHELFBENCH_DATA", str(Path(__file__).parents[1] / "fixtures/datasets"))
    spec = BACKBONES.get("effnet-lite0")
    pre = spec.preprocess.resized(48, 0.875)
    data = open_dataset(name).split("train")
    rows = np.arange(min(10, len(data)))
    buffer = extract.batch_buffer(3, pre, "cpu")
    got = [
        to_tensor(b.pixels("cpu"), pre, "cpu", buffer).clone()
        for b in load_batches(data, rows, pre, 3)
    ]
    for start, batch in zip(range(0, len(rows), 3), got, strict=True):
        images = np.stack([transform(data.image(i), pre) for i in rows[start : start + 3]])
        expected = (images.astype(np.float32) / 255 - np.float32(pre.mean)) / np.float32(pre.std)
        np.testing.assert_allclose(batch.permute(0, 2, 3, 1).numpy(), expected, rtol=0, atol=1e-6)
        assert batch.is_contiguous(memory_format=torch.channels_last)


@pytest.fixture
def fresh_speedup():
    """``bf16_speedup`` measured anew in the test, and again after it."""
    runtime.bf16_speedup.cache_clear()
    yield
    runtime.bf16_speedup.cache_clear()


def test_bf16_is_timed_only_where_the_cpu_has_bf16_instructions(monkeypatch, fresh_speedup):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert runtime.bf16_speedup() == 0.0 and not runtime.cpu_has_bf16()
    runtime.bf16_speedup.cache_clear()
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert runtime.bf16_speedup() > 0  # measured: slower or faster, depending on the CPU


def test_speed_checks_count_their_own_cpu_time_not_the_wall_clocks():
    """Time spent off the CPU (here asleep, on a loaded machine preempted) does not count,
    so other processes cannot flip a precision decision; torch's threads are restored."""
    import time

    def spin() -> None:
        end = time.thread_time() + 0.02
        while time.thread_time() < end:
            pass

    threads = torch.get_num_threads()
    best = runtime.fastest({"asleep": lambda: time.sleep(0.02), "busy": spin}, rounds=2)
    assert best["asleep"] < 0.005 <= 0.02 <= best["busy"]
    assert torch.get_num_threads() == threads


def test_auto_is_bf16_only_where_it_multiplies_faster(monkeypatch):
    monkeypatch.delenv(runtime.PRECISION_ENV, raising=False)
    monkeypatch.setattr(runtime, "device", lambda: "cpu")
    # A Xeon's AVX-512 BF16 without AMX (0.54x), an AMD EPYC's (4.2x)
    monkeypatch.setattr(runtime, "bf16_speedup", lambda: 0.54)
    assert resolve_precision("auto") == "fp32"
    monkeypatch.setattr(runtime, "bf16_speedup", lambda: 4.2)
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto") == "fp32"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setattr(runtime, "device", lambda: "cuda")
    assert resolve_precision("auto") == "bf16" and resolve_precision("tf32") == "tf32"
    monkeypatch.setattr(runtime, "device", lambda: "cpu")
    with pytest.raises(EmbeddingError, match="tf32 is a CUDA precision"):
        resolve_precision("tf32")


def test_precision_is_in_the_cache_key_and_the_row(tmp_path):
    text = (
        '[profile]\nimage_size = 32\nprecision = "PRECISION"\n[[cells]]\n'
        'datasets = ["synthetic-products"]\nbackbones = ["test-vit"]\nstrategies = ["knn"]\n'
    )
    results = {}
    for precision in ("fp32", "bf16"):
        (tmp_path / "s.toml").write_text(text.replace("PRECISION", precision))
        (cell,) = load_suite(tmp_path / "s.toml").cells
        results[precision] = run_cell(cell, tmp_path / "cache")
    assert results["fp32"].precision == "fp32" and results["bf16"].precision == "bf16"
    assert results["bf16"].cache == "miss"  # another key, not the fp32 rows
    assert results["fp32"].embedding_keys != results["bf16"].embedding_keys
    (tmp_path / "s.toml").write_text(text.replace("PRECISION", "fp16"))
    with pytest.raises(Exception, match='precision = "fp16": must be one of "auto", "fp32"'):
        load_suite(tmp_path / "s.toml")


def test_zeroshot_embeds_only_the_test_split_and_trains_nothing(tmp_path):
    (tmp_path / "s.toml").write_text(
        '[profile]\nimage_size = 32\n[[cells]]\ndatasets = ["synthetic-products"]\n'
        'backbones = ["test-clip"]\nstrategies = ["zeroshot"]\n'
    )
    (cell,) = load_suite(tmp_path / "s.toml").cells
    result = run_cell(cell, tmp_path / "cache")
    assert set(result.embedding_keys) == {"test"} and result.n_train == 0
    assert len(list((tmp_path / "cache" / "embeddings").glob("*/*/key.json"))) == 2  # test, text
    # Embedding the prompts is embedding: the cost charges no training to zero-shot.
    assert result.cost is not None and result.cost.seconds["train"] == 0.0
    assert result.cost.seconds["embed"] >= result.seconds["prompts"] > 0


def test_the_environment_says_what_auto_is_and_a_suite_still_wins(monkeypatch):
    monkeypatch.setattr(runtime, "device", lambda: "cpu")
    monkeypatch.setenv(runtime.PRECISION_ENV, "bf16")
    assert resolve_precision("auto") == "bf16" and resolve_precision("fp32") == "fp32"
    monkeypatch.setenv(runtime.PRECISION_ENV, "fp16")
    with pytest.raises(ShelfbenchError, match=r"SHELFBENCH_PRECISION = 'fp16': must be one of"):
        resolve_precision("auto")


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("SHELFBENCH_THREADS", "0", "an integer >= 1"),
        ("SHELFBENCH_THREADS", "two", "an integer >= 1"),
        ("SHELFBENCH_WORKERS", "-1", "an integer >= 0"),
        ("SHELFBENCH_PRECISION", "fp16", 'one of "fp32", "bf16", "tf32"'),
    ],
)
def test_a_runtime_variable_out_of_range_is_refused_before_any_cell_runs(
    pytester, monkeypatch, name, value, rule
):
    pytester.makefile(".toml", s='[suite]\n[[cells]]\ndatasets = ["synthetic-products"]\n'
                      'backbones = ["test-vit"]\nstrategies = ["knn"]\n')  # fmt: skip
    monkeypatch.setenv(name, value)
    result = pytester.runpytest("s.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*shelfbench: ${name} = {value!r}: must be {rule}*"])


def casts_per_batch(model, x, grad) -> int:
    """How many casts (``aten::_to_copy``) the second forward pass of one bf16 autocast
    block runs: activations only, where autocast kept its bf16 copies of the weights."""
    from torch.profiler import ProfilerActivity, profile

    with grad(), runtime.computing_at("bf16", "cpu"):
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")


def test_bf16_extraction_casts_the_weights_once_not_per_batch():
    """autocast keeps its bf16 copies of the weights for the whole extraction, so a batch
    after the first casts none of them; under inference_mode (torch >= 2.10) every batch
    casts every weight again: an open_clip ViT-B-32 ran 2.4x slower there in bf16 on this
    CPU (7.2 against 17.2 images/s, 2026-11-30) and 3.3x on an AMX Xeon."""
    import timm

    model = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    x = torch.rand(2, 3, 160, 160)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    ours = casts_per_batch(model, x, lambda: runtime.grad_off("bf16"))
    trap = casts_per_batch(model, x, torch.inference_mode)
    assert trap - ours >= linears  # each Linear's weight, cast again per batch in the trap
    assert runtime.grad_off("fp32").__class__ is torch.inference_mode
