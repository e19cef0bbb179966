"""File-backed datasets: the public entries' layouts, user catalogues in three formats,
the decoding rule and unreadable images, and the retrieval protocols."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import timm  # noqa: F401  (imported up front: pytester runs drop modules imported later)
from PIL import Image

from harness.cell import run_cell
from harness.data_checks import sanity_warnings
from harness.datasets import DATASETS, open_dataset, public
from harness.datasets.files import BadImage, decode
from harness.datasets.manifests import manifest
from harness.errors import DatasetError, SuiteError
from harness.report import unreadable_counts
from harness.strategies import STRATEGIES, Features
from harness.suite import load_suite

ROOT = Path(__file__).parents[1]
DATA = ROOT / "fixtures" / "datasets"
SUITES = ROOT / "fixtures" / "suites"

# name -> protocol, (train, test) images, classes, what relevance goes by, queries in test.
LOOKALIKES = {
    "stanford-online-products": ("leave-one-out", (12, 12), ("bicycle", "chair", "kettle"), 12, 0),
    "stanford-cars": ("split", (8, 4), ("1", "2", "99", "100"), None, 0),
    "cars196": ("leave-one-out", (6, 6), ("1", "2", "99", "100"), None, 0),
    "food-101": ("split", (9, 3), ("apple_pie", "baby_back_ribs", "baklava"), None, 0),
    "products-10k": ("split", (8, 4), ("0", "1", "2", "3"), None, 0),
    "rp2k": ("split", (6, 3), ("农夫山泉饮用天然水", "可口可乐330ml", "康师傅红烧牛肉面"), None, 0),
    "deepfashion-inshop": (
        "query-gallery",
        (4, 6),
        ("MEN/Denim", "WOMEN/Blouses_Shirts", "WOMEN/Dresses"),
        4,
        2,
    ),
}


@pytest.fixture
def lookalikes(monkeypatch):
    monkeypatch.setenv("SHELFBENCH_DATA", str(DATA))
    public.open_public.cache_clear()
    yield
    public.open_public.cache_clear()


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_each_public_entry_reads_its_official_layout(lookalikes, name):
    protocol, counts, classes, n_ids, n_queries = LOOKALIKES[name]
    dataset = open_dataset(name)
    assert DATASETS.get(name).protocol == protocol
    assert (len(dataset.split("train")), len(dataset.split("test"))) == counts
    assert dataset.classes == classes
    test = dataset.split("test")
    if n_ids is None:
        assert test.ids is None
    else:
        both = np.concatenate([dataset.split("train").ids, test.ids])
        assert len(np.unique(both)) == n_ids
    assert (0 if test.query is None else int(test.query.sum())) == n_queries
    image = test.image(0)
    assert image.mode == "RGB" and image.size == (16, 16)
    # A lookalike is not the release: verify says how it differs.
    assert public.verify(name)


def test_public_labels_follow_the_list_files(lookalikes):
    sop = open_dataset("stanford-online-products").split("test")
    assert sop.paths[0].decode().startswith("bicycle_final/") and sop.labels[0] == 0
    assert sop.ids[0] == sop.ids[1] != sop.ids[2]  # two views of one product
    cars = open_dataset("cars196")
    assert set(cars.split("train").labels) == {0, 1} and set(cars.split("test").labels) == {2, 3}
    inshop = open_dataset("deepfashion-inshop").split("test")
    queries = inshop.ids[inshop.query]
    assert set(queries) <= set(inshop.ids[~inshop.query])


def test_a_missing_public_dataset_says_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("SHELFBENCH_DATA", str(tmp_path))
    public.open_public.cache_clear()
    with pytest.raises(DatasetError, match=r"get it from http://data\.vision\.ee\.ethz\.ch"):
        open_dataset("food-101")


def test_a_user_catalogue_runs_in_every_format(tmp_path):
    suite = load_suite(SUITES / "catalogue.toml")
    results = {cell.id: run_cell(cell, tmp_path) for cell in suite.cells}
    open_own = suite.catalogue.dataset
    labels = {name: open_own(name).open().split("test").labels for name in ("catalogue-folder",)}
    for cell_id, result in results.items():
        # Six colour classes: even random-init features separate them.
        assert result.metrics["accuracy"] > 0.9, cell_id
        assert result.n_test == 24 and result.skipped.counts["test"] == 0
    assert len(labels["catalogue-folder"]) == 24
    folder = open_own("catalogue-folder").open()
    shards = open_own("catalogue-shards").open()
    assert folder.classes == ("class-0", "class-1", "class-2", "class-3", "class-4", "class-5")
    assert shards.classes == ("0", "1", "2", "3", "4", "5")
    assert open_own("catalogue-csv").open().split("test").ids is not None


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    (cell,) = load_suite(SUITES / "bad-images.toml").cells
    result = run_cell(cell, tmp_path)
    assert result.skipped.counts == {"train": 0, "test": 3}
    assert {Path(p).name for p in result.skipped.examples} == {
        "corrupt.jpg",
        "truncated.png",
        "missing.jpg",
    }
    assert result.n_test == 4 + 5  # the good images and the five odd but readable ones
    assert unreadable_counts(result) == "3 of test"
    again = run_cell(cell, tmp_path)  # a warm run knows them from the cache
    assert again.cache == "hit" and again.skipped == result.skipped


def test_bad_images_can_fail_the_cell_after_caching_the_rest(tmp_path):
    (cell,) = load_suite(SUITES / "bad-images.toml").cells
    strict = dataclasses.replace(
        cell, profile=cell.profile.model_copy(update={"bad_images": "fail"})
    )
    with pytest.raises(DatasetError, match=r"3 images could not be read, e\.g\. .*corrupt\.jpg"):
        run_cell(strict, tmp_path)
    assert run_cell(cell, tmp_path).cache == "hit"


def test_the_decoding_rule():
    cases = DATA / "bad-images" / "cases"
    for name in ("cmyk.jpg", "sixteen-bit.png", "exif-rotated.jpg", "palette.png", "rgba.png"):
        assert decode(cases / name, name).mode == "RGB"
    assert decode(cases / "exif-rotated.jpg", "x").size == (8, 16)  # stored 16 x 8
    sixteen = np.asarray(decode(cases / "sixteen-bit.png", "x"))
    stored = np.asarray(Image.open(cases / "sixteen-bit.png"), dtype=np.int64)
    np.testing.assert_array_equal(sixteen[..., 0], stored // 256)
    rgba = np.asarray(decode(cases / "rgba.png", "x"), dtype=np.int64)
    raw = np.asarray(Image.open(cases / "rgba.png"), dtype=np.int64)
    np.testing.assert_allclose(rgba, (raw[..., :3] * 128 + 255 * 127) / 255, atol=1.5)
    for name, reason in (
        ("corrupt.jpg", "cannot decode"),
        ("truncated.png", "cannot decode"),
        ("missing.jpg", "file not found"),
    ):
        with pytest.raises(BadImage, match=re.escape(f"{name}: {reason}")):
            decode(cases / name, name)


def test_a_manifest_path_may_not_escape_its_root(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,split\n../../etc/passwd,a,train\nx.png,a,test\n")
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        manifest("m", tmp_path, {"train": "train", "test": "test"}, "m.csv")


def hashed_catalogue(root: Path) -> Path:
    """The bad-images set's good files under ``root`` in a manifest with a sha256 column,
    plus a corrupt train file (its hash right) and a train file changed after hashing."""
    import hashlib
    import shutil

    lines = ["path,label,split,sha256"]
    rows = (DATA / "bad-images" / "manifest.csv").read_text().splitlines()[1:13]
    rows.append("cases/corrupt.jpg,class-1,train")
    for row in rows:
        source = DATA / "bad-images" / row.split(",")[0]
        (root / source.parent.name).mkdir(exist_ok=True)
        shutil.copy(source, root / source.parent.name)
        lines.append(f"{row},{hashlib.sha256(source.read_bytes()).hexdigest()}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    Image.new("RGB", (8, 8), "red").save(root / "good" / "0-0.png")  # a train file
    return root / "manifest.csv"


def test_a_manifest_sha256_column_is_checked_when_a_file_is_read(tmp_path):
    file = hashed_catalogue(tmp_path)
    hashed = manifest("hashed", tmp_path, {"train": "train", "test": "test"})
    train = hashed.split("train")
    assert train.image(1).mode == "RGB"
    with pytest.raises(BadImage, match=r"0-0\.png: its sha256 differs from the manifest's"):
        train.image(0)
    text = file.read_text()
    file.write_text(text.replace(text.split(",")[-1][:8], "0" * 8, 1))
    changed = manifest("hashed", tmp_path, {"train": "train", "test": "test"})
    assert changed.fingerprint != hashed.fingerprint
    file.write_text(text.replace(",train,", ",train,not-hex", 1))
    with pytest.raises(DatasetError, match="line 2: sha256 'not-hex"):
        manifest("hashed", tmp_path, {"train": "train", "test": "test"})


def test_fine_tuning_skips_unreadable_train_images(tmp_path):
    hashed_catalogue(tmp_path)
    suite = tmp_path / "s.toml"
    suite.write_text(
        '[suite]\nname = "hashed"\n[profile]\nbatch_size = 4\nimage_size = 32\n'
        '[datasets.hashed-finetune]\nformat = "csv"\nroot = "."\nmanifest = "manifest.csv"\n'
        '[[cells]]\ndatasets = ["hashed-finetune"]\nbackbones = ["test-efficientnet"]\n'
        'strategies = ["finetune"]\n[strategy.finetune]\nepochs = 1\nbatch_size = 4\n'
    )
    (cell,) = load_suite(suite).cells
    result = run_cell(cell, tmp_path / "cache")
    assert result.chosen["finetune"]["unreadable"] == 2
    assert result.skipped.counts["train"] == 2 and result.n_train == 7
    # Of 7 readable images in batches of 4, one was left alone in its batch: batch norm
    # cannot train on one image, so that batch was skipped (it crashed before).
    assert result.chosen["finetune"]["images_seen"] == 6
    strict = dataclasses.replace(
        cell, profile=cell.profile.model_copy(update={"bad_images": "fail"})
    )
    with pytest.raises(DatasetError, match=r"corrupt\.jpg|0-0\.png"):
        run_cell(strict, tmp_path / "strict")


def test_image_folder_numbers_classes_the_same_in_every_split(tmp_path):
    for split, classes in (("train", ["apple", "pear", "plum"]), ("test", ["pear", "plum"])):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(tmp_path / split / name / "1.png")
    path = tmp_path / "s.toml"
    path.write_text(
        f'[datasets.fruit]\nformat = "imagefolder"\nroot = "{tmp_path}"\n'
        '[[cells]]\ndatasets = ["fruit"]\nbackbones = ["test-vit"]\nstrategies = ["knn"]\n'
    )
    fruit = load_suite(path).catalogue.dataset("fruit").open()
    assert fruit.split("test").labels.tolist() == [1, 2]  # pear and plum keep their numbers


def test_a_bad_dataset_declaration_is_one_line(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[datasets.x]\nformat = "xlsx"\nroot = "."\n')
    with pytest.raises(SuiteError, match='format = "xlsx": must be one of "imagefolder"'):
        load_suite(path)


def brute_force_recall_at_1(vectors, ids, queries, gallery):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    hits = []
    for q in queries:
        candidates = [g for g in gallery if g != q]
        if not any(ids[g] == ids[q] for g in candidates):
            continue
        best = max(candidates, key=lambda g: (unit[q] @ unit[g], -g))
        hits.append(float(ids[best] == ids[q]))
    return float(np.mean(hits))


@pytest.mark.parametrize("protocol", ["leave-one-out", "query-gallery"])
def test_retrieval_protocols_match_brute_force(protocol):
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(15), 3)
    test = rng.normal(size=(45, 6)).astype(np.float32) + ids[:, None] * 0.3
    query = np.tile([True, False, False], 15)
    data = Features(
        np.zeros((5, 6), np.float32),
        np.zeros(5, np.int64),
        test,
        ids % 3,
        3,
        protocol=protocol,
        test_ids=ids,
        test_query=query,
    )
    knn = STRATEGIES.get("knn")
    outcome = knn.run(data, knn.defaults)
    if protocol == "leave-one-out":
        queries, gallery = np.arange(45), np.arange(45)
    else:
        queries, gallery = np.flatnonzero(query), np.flatnonzero(~query)
    assert outcome.metrics["recall@1"] == pytest.approx(
        brute_force_recall_at_1(test, ids, queries, gallery)
    )
    assert len(outcome.items["accuracy"]) == len(queries)


def test_near_chance_accuracy_suggests_checking_labels():
    assert "check that train and test labels map" in sanity_warnings({"accuracy": 0.1}, 10)[0]
    assert sanity_warnings({"accuracy": 0.8}, 10) == []
    assert sanity_warnings({"accuracy": 0.001}, 1000) == []  # many classes: no opinion
