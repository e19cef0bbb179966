"""The study's public e-commerce datasets, each read exactly as its official archive
unpacks under ``$SHELFBENCH_DATA/<name>/`` (or ``--root``), one declarative entry each.

``FACTS`` records what each entry claims: image and class counts per split, the official
archive and its checksum, and whether each was confirmed here or taken from a reference
(none of these archives can be downloaded on the machine this was written on).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np

from harness.datasets.base import DATASETS, Dataset, DatasetSpec
from harness.datasets.download import download
from harness.datasets.files import FileSplit, codes, file_split, files_fingerprint
from harness.datasets.folders import image_folder
from harness.datasets.manifests import read_manifest
from harness.errors import DatasetError, DatasetUnavailable
from harness.paths import data_roots


@dataclass(frozen=True)
class Facts:
    """What an entry's official release holds. ``counts``: images per split; ``classes``:
    classes per split; ``archive``: (file, md5) or None where no checksum is published;
    ``reference``: where the facts come from (none was checked against the real files)."""

    counts: dict[str, int]
    classes: dict[str, int]
    archive: tuple[str, str] | None
    url: str
    get: str
    reference: str
    layout: tuple[str, ...] = ()


def _lines(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise DatasetUnavailable(f"{path} does not exist") from None


def _build(
    name: str, root: Path, rows: Mapping[str, Sequence[tuple[str, str, str | None, bool]]]
) -> Dataset:
    """Splits from (path, label, id or None, is_query) rows; labels and ids coded once."""
    everything = [row for split in rows.values() for row in split]
    _, classes = codes([label for _, label, _, _ in everything])
    index = {c: i for i, c in enumerate(classes)}
    with_ids = any(row[2] is not None for row in everything)
    id_codes, _ = codes([str(row[2]) for row in everything]) if with_ids else (None, ())
    built: dict[str, FileSplit] = {}
    start = 0
    for split, items in rows.items():
        ids = None if id_codes is None else id_codes[start : start + len(items)]
        start += len(items)
        built[split] = file_split(
            root,
            [path for path, _, _, _ in items],
            np.array([index[label] for _, label, _, _ in items], dtype=np.int64),
            ids,
            np.array([query for *_, query in items], dtype=bool),
        )
    return Dataset(name, files_fingerprint(name, built), built, classes)


def sop(name: str, root: Path) -> Dataset:
    """Stanford Online Products: ``Ebay_{train,test}.txt`` (image_id class_id
    super_class_id path). Label: the super-class (12, shared by both splits); relevance:
    the product (class_id), whose train and test sets are disjoint."""
    base = root / "Stanford_Online_Products"
    rows = {
        split: [(r[3], r[3].split("/")[0].removesuffix("_final"), r[1], False) for r in table[1:]]
        for split in ("train", "test")
        for table in [_lines(base / f"Ebay_{split}.txt")]
    }
    return _build(name, base, rows)


def _cars_annotations(root: Path) -> list[tuple[str, int, bool]]:
    """(relative path, class 1..196, is test) from ``cars_annos.mat``."""
    from scipy.io import loadmat

    path = root / "cars_annos.mat"
    if not path.exists():
        raise DatasetUnavailable(f"{path} does not exist")
    annotations = loadmat(path, squeeze_me=True)["annotations"]
    return [(str(a["relative_im_path"]), int(a["class"]), bool(a["test"])) for a in annotations]


def stanford_cars(name: str, root: Path) -> Dataset:
    """Stanford Cars, classification split: ``cars_annos.mat``'s test flag (8,144 / 8,041)."""
    rows: dict[str, list[tuple[str, str, str | None, bool]]] = {"train": [], "test": []}
    for path, label, test in _cars_annotations(root):
        rows["test" if test else "train"].append((path, str(label), None, False))
    return _build(name, root, rows)


def cars196(name: str, root: Path) -> Dataset:
    """Cars196 for retrieval: classes 1-98 train, 99-196 test, leave-one-out on test."""
    rows: dict[str, list[tuple[str, str, str | None, bool]]] = {"train": [], "test": []}
    for path, label, _ in _cars_annotations(root):
        rows["test" if label > 98 else "train"].append((path, str(label), None, False))
    return _build(name, root, rows)


def food101(name: str, root: Path) -> Dataset:
    """Food-101: ``meta/{train,test}.txt`` list ``class/image_id``; images in
    ``images/class/image_id.jpg``."""
    base = root / "food-101"
    rows = {
        split: [(f"images/{r[0]}.jpg", r[0].split("/")[0], None, False) for r in table]
        for split in ("train", "test")
        for table in [_lines(base / "meta" / f"{split}.txt")]
    }
    return _build(name, base, rows)


def products10k(name: str, root: Path) -> Dataset:
    """Products-10K: ``train.csv`` (name,class,group) with images in ``train/`` and
    ``test_kaggletest.csv`` (name,class,usage) with images in ``test/``. Label: the SKU."""
    files = {"train": ("train.csv", "train"), "test": ("test_kaggletest.csv", "test")}
    rows = {
        split: [
            (
                f"{folder}/{_field(root / f, n, r, 'name')}",
                _field(root / f, n, r, "class"),
                None,
                False,
            )
            for n, r in read_manifest(root / f)
        ]
        for split, (f, folder) in files.items()
    }
    return _build(name, root, rows)


def _field(path: Path, where: str, row: dict[str, str], column: str) -> str:
    if not row.get(column):
        raise DatasetError(f"{path} {where}: no value for {column!r}")
    return row[column]


def rp2k(name: str, root: Path) -> Dataset:
    """RP2K: retail shelf product crops, ``all/{train,test}/<product>/<image>``."""
    return image_folder(name, root / "all", {"train": "train", "test": "test"})


def inshop(name: str, root: Path) -> Dataset:
    """DeepFashion In-shop: ``list_eval_partition.txt`` (a count, a header, then
    image_name item_id evaluation_status). Test = query + gallery; relevance: the item;
    label: the clothing category (``img/<gender>/<category>/...``)."""
    table = _lines(root / "list_eval_partition.txt")[2:]
    rows: dict[str, list[tuple[str, str, str | None, bool]]] = {"train": [], "test": []}
    for path, item, status in table:
        category = "/".join(path.split("/")[1:3])
        split = "train" if status == "train" else "test"
        rows[split].append((path, category, item, status == "query"))
    return _build(name, root, rows)


FACTS = {
    "stanford-online-products": Facts(
        counts={"train": 59551, "test": 60502},
        classes={"train": 11318, "test": 11316},
        archive=None,
        url="",
        get="https://cvgl.stanford.edu/projects/lifted_struct/ (Stanford_Online_Products.zip)",
        reference="Oh Song et al., CVPR 2016; the issue text",
        layout=(
            "Stanford_Online_Products/Ebay_train.txt",
            "Stanford_Online_Products/Ebay_test.txt",
        ),
    ),
    "stanford-cars": Facts(
        counts={"train": 8144, "test": 8041},
        classes={"train": 196, "test": 196},
        archive=None,
        url="",
        get="the Stanford Cars release (car_ims.tgz and cars_annos.mat); its original page "
        "is offline, mirrors exist (e.g. Kaggle)",
        reference="Krause et al., 3dRR 2013; the issue text",
        layout=("cars_annos.mat", "car_ims/"),
    ),
    "cars196": Facts(
        counts={"train": 8054, "test": 8131},
        classes={"train": 98, "test": 98},
        archive=None,
        url="",
        get="the Stanford Cars release (car_ims.tgz and cars_annos.mat), as stanford-cars",
        reference="the metric-learning split (classes 1-98 / 99-196) of Oh Song et al. 2016",
        layout=("cars_annos.mat", "car_ims/"),
    ),
    "food-101": Facts(
        counts={"train": 75750, "test": 25250},
        classes={"train": 101, "test": 101},
        archive=("food-101.tar.gz", "85eeb15f3717b99a5da872d97d918f87"),
        url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
        get="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz (unpack here)",
        reference="Bossard et al., ECCV 2014; md5 as torchvision's Food101 pins it",
        layout=("food-101/meta/train.txt", "food-101/meta/test.txt"),
    ),
    "products-10k": Facts(
        counts={"train": 141931, "test": 55375},
        classes={"train": 9691, "test": 9691},
        archive=None,
        url="",
        get="https://products-10k.github.io/ (train.zip, test.zip, train.csv, test_kaggletest.csv)",
        reference="Bai et al., arXiv 2008.10545 (counts as reported there; unconfirmed)",
        layout=("train.csv", "test_kaggletest.csv", "train/", "test/"),
    ),
    "rp2k": Facts(
        counts={"train": 344829, "test": 39457},
        classes={"train": 2388, "test": 2388},
        archive=None,
        url="",
        get="https://www.pinlandata.com/rp2k_dataset/ (rp2k_dataset.zip, unpacks to all/)",
        reference="Peng et al., arXiv 2006.12634 (counts as reported there; unconfirmed)",
        layout=("all/train/", "all/test/"),
    ),
    "deepfashion-inshop": Facts(
        counts={"train": 25882, "test": 26830},
        classes={"train": 3997, "test": 3985},
        archive=None,
        url="",
        get="https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html "
        "(img.zip and Eval/list_eval_partition.txt, both at the root)",
        reference="Liu et al., CVPR 2016: 14,218 queries and 12,612 gallery images; classes "
        "here count items",
        layout=("list_eval_partition.txt", "img/"),
    ),
}

ENTRIES: dict[str, tuple[str, str, Callable[[str, Path], Dataset]]] = {
    "stanford-online-products": ("consumer goods", "leave-one-out", sop),
    "stanford-cars": ("cars", "split", stanford_cars),
    "cars196": ("cars", "leave-one-out", cars196),
    "food-101": ("food", "split", food101),
    "products-10k": ("consumer goods", "split", products10k),
    "rp2k": ("retail shelves", "split", rp2k),
    "deepfashion-inshop": ("fashion", "query-gallery", inshop),
}


def find_root(name: str) -> Path:
    """``<data root>/<name>`` holding the official layout, from ``harness.paths``."""
    facts = FACTS[name]
    for base in data_roots():
        if all((base / name / part).exists() for part in facts.layout):
            return base / name
    raise DatasetUnavailable(
        f"{name} is not on this machine (looked in "
        f"{', '.join(str(b / name) for b in data_roots())}); get it from {facts.get} and "
        f"unpack it so that {name}/{facts.layout[0]} exists under $SHELFBENCH_DATA"
    )


@cache
def open_public(name: str, root: Path | None = None) -> Dataset:
    _, _, load = ENTRIES[name]
    return load(name, root or find_root(name))


def fetch(name: str, dest: Path) -> Path:
    """Download and unpack an entry with a stable URL; otherwise say where to get it."""
    facts = FACTS[name]
    if not facts.url or facts.archive is None:
        raise DatasetError(
            f"{name} has no stable download; get it from {facts.get} and unpack it into "
            f"{dest / name}/ so that {facts.layout[0]} exists there"
        )
    import tarfile

    archive, md5 = facts.archive
    target = dest / name / archive
    download(facts.url, target, md5)
    with tarfile.open(target) as tar:
        tar.extractall(dest / name, filter="data")
    open_public.cache_clear()
    return dest / name


def verify(name: str, root: Path | None = None) -> list[str]:
    """Differences between the files and the entry's facts (empty: all as published)."""
    dataset = open_public(name, root)
    facts = FACTS[name]
    problems = []
    for split, expected in facts.counts.items():
        data = dataset.split(split)
        assert isinstance(data, FileSplit)  # a public dataset is local files
        if len(data) != expected:
            problems.append(f"{split}: {len(data)} images, the release has {expected}")
        ids = data.labels if data.ids is None else data.ids
        if len(np.unique(ids)) != facts.classes[split]:
            problems.append(
                f"{split}: {len(np.unique(ids))} classes, the release has {facts.classes[split]}"
            )
        missing = [str(data.path(i)) for i in range(len(data)) if not data.path(i).exists()]
        if missing:
            problems.append(f"{split}: {len(missing)} files missing, e.g. {missing[0]}")
    return problems


for _name, (_domain, _protocol, _) in ENTRIES.items():
    DATASETS.add(
        DatasetSpec(
            name=_name,
            domain=_domain,
            classes=(),
            splits=("train", "test"),
            protocol=_protocol,
            open=partial(open_public, _name),
            source=FACTS[_name].reference,
            fetch=partial(fetch, _name),
        )
    )
