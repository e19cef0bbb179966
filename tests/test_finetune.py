"""Strategies that train the backbone: learning, resuming, what trains, and what it costs."""

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import timm  # noqa: F401  (imported up front: pytester runs drop modules imported later)
import torch
from PIL import Image

from harness import augment, cost, finetune, report, training
from harness.backbones import BACKBONES
from harness.backbones.build import build_model
from harness.backbones.weights import resolve
from harness.cell import run_cell
from harness.errors import SuiteError
from harness.row import CellRow
from harness.suite import Cell, Profile

# Steps large enough for a random-init network to learn in a few short epochs.
TRAIN = {"epochs": 2, "batch_size": 16, "lr": 2e-3, "head_lr": 1e-2}


def make_cell(strategy, params=None, dataset="synthetic-products", n_train=96):
    from harness.strategies import parse_strategy

    spec, _ = parse_strategy(strategy)
    return Cell(
        "test",
        dataset,
        "test-efficientnet",
        strategy,
        Profile(n_train=n_train, n_test=48, image_size=64, batch_size=16),
        spec.params({**TRAIN, **(params or {})} if spec.tuning else {}),
    )


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [training.learning_rate(step, 100, 10) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))
    assert factors[-1] < 0.001


def test_augmentation_is_seeded_and_sized():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8))
    pre = BACKBONES.get("test-efficientnet").preprocess.resized(24)

    def draw(seed):
        return augment.augment(image, pre, np.random.default_rng(seed), (0.35, 1.0))

    assert draw(1).shape == (24, 24, 3)
    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


@pytest.mark.parametrize("name", ["synthetic-products", "products-10k"])
@pytest.mark.parametrize("augmented", [True, False])
def test_training_batches_hold_the_pixels_augment_draws(name, augmented, monkeypatch):
    """In-memory images are cropped, resized and flipped by per-image weights, files by PIL
    in the loader: either way each item gets exactly ``augment``'s pixels from its own
    seeded draws (or ``transform``'s without augmentation), in the epoch's order."""
    from harness.datasets import open_dataset
    from harness.extract import transform

    monkeypatch.setenv("SHELFBENCH_DATA", str(Path(__file__).parents[1] / "fixtures/datasets"))
    dataset = open_dataset(name)
    data = dataset.split("train")
    spec = BACKBONES.get("test-efficientnet")
    pre = spec.preprocess.resized(40, 0.875)
    settings = {**training.TRAIN_DEFAULTS, "batch_size": 3, "augment": augmented, "seed": 7}
    indices = np.arange(min(8, len(data)))
    order = np.random.default_rng(0).permutation(len(indices))
    batches = list(augment.train_batches(data, indices, pre, settings, order, epoch=2))
    assert np.concatenate([b.rows for b in batches]).tolist() == indices[order].tolist()
    for loaded in batches:
        expected = [
            augment.augment(data.image(i), pre, augment.item_rng(7, 2, i), (0.35, 1.0))
            if augmented
            else transform(data.image(i), pre)
            for i in loaded.rows
        ]
        np.testing.assert_array_equal(loaded.pixels("cpu").numpy(), np.stack(expected))


@pytest.mark.parametrize(
    ("backbone", "blocks", "trains"),
    [
        ("test-vit", 1, ("blocks.5.", "norm.")),
        ("test-efficientnet", 2, ("blocks.3.", "blocks.4.", "conv_head.", "bn2.")),
        ("test-clip", 1, ("clip.visual.transformer.resblocks.1.", "clip.visual.ln_post.")),
    ],
)
def test_partial_trains_only_the_last_blocks(backbone, blocks, trains):
    spec = BACKBONES.get(backbone)
    model = build_model(spec, resolve(spec))
    training.trainable(model, spec, blocks)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(trains) or n == "clip.visual.proj" for n in names)
    assert all(any(n.startswith(t) for n in names) for t in trains)
    everything = training.trainable(model, spec, None)
    image = training.image_model(model, spec)
    assert sum(p.numel() for p in everything) == sum(p.numel() for p in image.parameters())


def test_partial_refuses_more_blocks_than_the_model_has():
    spec = BACKBONES.get("test-vit")
    with pytest.raises(SuiteError, match=r"test-vit has 6 blocks; use 1\.\.6"):
        training.trainable(build_model(spec, resolve(spec)), spec, 7)


def test_a_changed_setting_is_a_new_run():
    cell = make_cell("finetune")
    dataset, spec = cell.dataset, BACKBONES.get(cell.backbone)
    from harness.datasets import open_dataset

    data = open_dataset(dataset)
    pre = spec.preprocess.resized(64)
    rows = np.arange(10)

    def key(blocks=None, **change):
        return finetune.run_key(
            training.Run(data, rows, spec, resolve(spec), pre, blocks, cell.params | change)
        )

    assert key() == key()
    assert key() != key(lr=1e-3)
    assert key() != key(blocks=1)
    assert key() == key(unrelated=1)


def test_finetuning_learns_beyond_the_frozen_probe(tmp_path):
    tuned = run_cell(make_cell("finetune", {"epochs": 4}, n_train=None), tmp_path)
    frozen = run_cell(make_cell("linear", n_train=None), tmp_path)
    losses = [epoch["loss"] for epoch in tuned.chosen["finetune"]["history"]]
    assert losses[-1] < losses[0]
    assert tuned.metrics["accuracy"] > frozen.metrics["accuracy"] + 0.1
    assert tuned.cost.trainable_params > frozen.cost.trainable_params
    assert tuned.cost.seconds["train"] > 0 and tuned.cost.train_gflops > 0
    assert tuned.seconds["tune"] >= tuned.chosen["finetune"]["seconds"]


def test_the_results_table_counts_fine_tuning_as_training_time():
    seconds = {"tune": 600.0, "embed": 50.0, "fit": 2.0, "eval": 1.0, "total": 653.0}
    row = CellRow("d/b/finetune", outcome="passed", seconds=seconds)
    (line,) = report.table([row], []).rows
    assert list(line[-2:]) == ["602.0", "653.0"]


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    cell = make_cell("finetune", {"epochs": 3})
    whole = run_cell(cell, tmp_path / "whole")

    real_save = training.save_checkpoint
    saved = []

    def killed_after_first_epoch(run_dir, state):
        real_save(run_dir, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, tmp_path / "resumed")
    assert len(list((tmp_path / "resumed").glob("finetune/*/*/epoch-0001.pt"))) == 1

    monkeypatch.setattr(
        training,
        "save_checkpoint",
        lambda d, state: saved.append(state["epoch"]) or real_save(d, state),
    )
    resumed = run_cell(cell, tmp_path / "resumed")
    assert saved == [2, 3]  # it went on from epoch 1's checkpoint, not from scratch
    assert resumed.chosen["finetune"]["history"] == whole.chosen["finetune"]["history"]
    assert resumed.metrics == whole.metrics
    assert resumed.embedding_keys == whole.embedding_keys  # the same checkpoint hash
    assert not list((tmp_path / "resumed").glob("finetune/*/*/epoch-*.pt"))


def test_cross_tuning_reuses_the_finetune_run(tmp_path, monkeypatch):
    own = run_cell(make_cell("finetune"), tmp_path)

    def refuse(*args):
        raise AssertionError("trained again")

    monkeypatch.setattr(finetune, "train", refuse)
    cross = run_cell(make_cell("cross:synthetic-products", dataset="synthetic-shelf"), tmp_path)
    assert cross.chosen["finetune"]["run"] == own.chosen["finetune"]["run"]
    assert cross.chosen["finetune"]["on"] == "synthetic-products"
    assert {"accuracy", "mmp@5"} <= set(cross.metrics)


def test_cost_is_recorded_and_flops_are_cached(tmp_path, monkeypatch):
    spec = BACKBONES.get("test-efficientnet")
    small = cost.gflops_per_image(spec, spec.preprocess.resized(64), tmp_path)
    large = cost.gflops_per_image(spec, spec.preprocess.resized(128), tmp_path)
    # A CNN's FLOPs grow with the pixel count: four times the pixels, about four times.
    assert 3.5 < large / small < 4.5

    def refuse(*args):
        raise AssertionError("model loaded for a cached FLOP count")

    monkeypatch.setattr(cost, "load_model", refuse)
    assert cost.gflops_per_image(spec, spec.preprocess.resized(64), tmp_path) == small


def test_peak_rss_window_restarts():
    big = np.ones(200 * 2**20 // 8)
    before = cost.peak_rss_mb()
    del big
    cost.reset_peaks()
    assert cost.peak_rss_mb() < before - 100


def test_the_linear_probe_counts_its_training():
    from harness.strategies import STRATEGIES, Features

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 8)).astype(np.float32), np.repeat(np.arange(3), 20)
    linear = STRATEGIES.get("linear")
    probe = linear.run(Features(x, y, x[:9], y[:9], 3), linear.defaults)
    assert probe.trainable_params == 8 * 3 + 3 and probe.train_gflops > 0


def test_the_linear_probe_shows_its_passes_on_a_bar(monkeypatch):
    """A long probe (Products-10K) counts its passes over the data on a progress bar."""
    import io

    from tqdm import tqdm

    from harness.strategies import STRATEGIES, Features, linear

    shown = io.StringIO()
    bars: list[tqdm] = []

    def bar(n_classes: int) -> tqdm:
        bars.append(tqdm(desc=f"linear probe, {n_classes} classes", file=shown, mininterval=0))
        return bars[-1]

    monkeypatch.setattr(linear, "passes_bar", bar)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 8)).astype(np.float32), np.repeat(np.arange(3), 20)
    probe = STRATEGIES.get("linear")
    outcome = probe.run(Features(x, y, x[:9], y[:9], 3), probe.defaults)
    passes = outcome.train_gflops * 1e9 / (6 * 8 * 3)  # passes × items, as the probe counts
    assert bars[0].n > len(probe.defaults["C"]) and 48 * bars[0].n <= passes <= 60 * bars[0].n
    assert "linear probe, 3 classes" in shown.getvalue()
    assert f"refit at C={outcome.chosen['C']:g}" in shown.getvalue()


def small_run(norm="batch"):
    """A two-epoch run of the random-init CNN on 32 synthetic items, 8 held out."""
    from harness.datasets import open_dataset

    cell = make_cell("finetune")
    data = open_dataset(cell.dataset)
    spec = BACKBONES.get(cell.backbone)
    pre = spec.preprocess.resized(32)
    rows = np.arange(40)
    params = cell.params | {"epochs": 2, "norm": norm}
    return training.Run(data, rows[:32], spec, resolve(spec), pre, None, params, True, rows[32:])


@pytest.mark.parametrize("norm", ["batch", "frozen"])
def test_frozen_norms_keep_their_statistics_and_every_epoch_is_validated(tmp_path, norm):
    run = small_run(norm)
    model = training.trainer(run).model
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    _, state = finetune.advance(run, tmp_path)
    tuned = torch.load(next(tmp_path.glob("finetune/*/*/tuned.pt")), weights_only=True)
    kept = [torch.equal(before[k], tuned[k]) for k in before]
    assert all(kept) if norm == "frozen" else not any(kept)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert all(0 <= h["validation_accuracy"] <= 1 for h in state["history"])
    assert len(state["epoch_seconds"]) == 2


def test_a_pilot_resumes_to_the_run_that_was_never_stopped(tmp_path):
    run = small_run()
    _, piloted = finetune.advance(run, tmp_path / "a", until=1)
    assert piloted["epoch"] == 1 and not list((tmp_path / "a").glob("finetune/*/*/tuned.pt"))
    _, resumed = finetune.advance(run, tmp_path / "a")
    _, whole = finetune.advance(run, tmp_path / "b")
    assert resumed["history"] == whole["history"]
    tuned = [finetune.finetune(run, tmp_path / d).head for d in ("a", "b")]
    np.testing.assert_array_equal(tuned[0][0], tuned[1][0])


def test_a_head_to_start_from_is_copied_and_keys_the_run(tmp_path):
    run = small_run()
    width = training.trainer(run).head.in_features
    rng = np.random.default_rng(0)
    head = (rng.normal(size=(8, width)).astype(np.float32), np.arange(8, dtype=np.float32))
    started = dataclasses.replace(run, head=head)
    t = training.trainer(started)
    np.testing.assert_array_equal(t.head.weight.detach().numpy(), head[0])
    np.testing.assert_array_equal(t.head.bias.detach().numpy(), head[1])
    keys = {finetune.run_key(r)["settings"]["seed"] for r in (run, started)}
    assert keys == {0} and finetune.run_key(run) != finetune.run_key(started)
    assert finetune.run_key(run) != finetune.run_key(dataclasses.replace(run, validation=None))
