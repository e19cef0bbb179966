"""Catalogues where they live: the same cells run from a local folder, a Parquet manifest
(paths, or images as bytes in a column), an HTTP root and an S3 root give identical
metrics; a missing, denied or slow object is one unreadable image with its reason; a
changed object changes the dataset's fingerprint. Every server is started here on
127.0.0.1; no test reaches any other address."""

import contextlib
import functools
import http.server
import shutil
import threading
import time
from pathlib import Path

import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("s3fs", reason="pip install 'shelfbench[remote]'")
moto_server = pytest.importorskip("moto.server", reason="pip install 'shelfbench[test]'")

from harness.cell import run_cell  # noqa: E402
from harness.datasets.files import BadImage  # noqa: E402
from harness.datasets.formats import user_dataset  # noqa: E402
from harness.suite import load_suite  # noqa: E402

FOLDER = Path(__file__).parents[1] / "fixtures" / "datasets" / "catalogue" / "imagefolder"


def items() -> list[tuple[str, str, str]]:
    """(path, label, split) of the folder's images, in the order ImageFolder reads them."""
    return [
        (p.relative_to(FOLDER).as_posix(), p.parent.name, split)
        for split in ("train", "test")
        for p in sorted((FOLDER / split).glob("*/*"))
    ]


def write_parquet(path: Path, inline: bool = False) -> None:
    rows = items()
    columns = {
        "path": [p for p, _, _ in rows],
        "label": [label for _, label, _ in rows],
        "split": [split for _, _, split in rows],
    }
    if inline:
        columns["image"] = [(FOLDER / p).read_bytes() for p, _, _ in rows]
    pq.write_table(pa.table(columns), path)


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; /denied/ answers 403, /broken/ 500, and /slow/ answers after 3 s."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if "/denied/" in self.path:
            self.send_error(403)
        elif "/broken/" in self.path:
            self.send_error(500)
        elif "/slow/" in self.path:
            time.sleep(3)
            with contextlib.suppress(OSError):  # the client has given up by now
                self.send_error(404)
        else:
            super().do_GET()

    do_HEAD = do_GET


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    served = tmp_path_factory.mktemp("http")
    shutil.copytree(FOLDER, served / "catalogue")
    write_parquet(served / "catalogue" / "items.parquet")
    handler = functools.partial(Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/catalogue", served / "catalogue"
    server.shutdown()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("shop")
    for path, _, _ in items():
        fs.pipe(f"shop/catalogue/{path}", (FOLDER / path).read_bytes())
    local = tmp_path_factory.mktemp("s3") / "items.parquet"
    write_parquet(local)
    fs.put(str(local), "shop/catalogue/items.parquet")
    yield options, fs
    server.stop()


def toml_table(table: dict) -> str:
    import json

    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    return "\n".join(f"{k} = {value(v)}" for k, v in table.items())


def test_a_catalogue_gives_the_same_metrics_wherever_it_lives(tmp_path, http_root, s3):
    local = tmp_path / "catalogue"
    shutil.copytree(FOLDER, local)
    write_parquet(local / "items.parquet")
    write_parquet(local / "inline.parquet", inline=True)
    url, _ = http_root
    options, _ = s3
    s3_root = {"root": "s3://shop/catalogue", "storage_options": options}
    tables = {
        "where-folder": {"format": "imagefolder", "root": str(FOLDER)},
        "where-parquet": {"format": "parquet", "root": str(local), "manifest": "items.parquet"},
        "where-inline": {"format": "parquet", "root": str(local), "manifest": "inline.parquet"},
        "where-http": {"format": "parquet", "root": url, "manifest": "items.parquet"},
        "where-s3": {"format": "parquet", "manifest": "items.parquet", **s3_root},
        "where-s3-folder": {"format": "imagefolder", **s3_root},
    }
    tables["where-inline"]["image"] = "image"
    text = "[suite]\n[profile]\nimage_size = 32\nbatch_size = 16\n"
    for name, table in tables.items():
        text += f"[datasets.{name}]\n{toml_table(table)}\n"
    text += f'[[cells]]\ndatasets = {list(tables)}\nbackbones = ["test-efficientnet"]\n'
    text += 'strategies = ["knn", "linear"]\n'
    (tmp_path / "s.toml").write_text(text.replace("'", '"'))
    results = {c.id: run_cell(c, tmp_path / "cache") for c in load_suite(tmp_path / "s.toml").cells}
    for strategy in ("knn", "linear"):
        metrics = {n: results[f"{n}/test-efficientnet/{strategy}"].metrics for n in tables}
        first = metrics["where-folder"]
        assert all(m == first for m in metrics.values()), metrics
    assert results["where-folder/test-efficientnet/knn"].n_test == 24


def test_a_missing_denied_or_slow_object_is_one_unreadable_image(tmp_path, http_root):
    url, served = http_root
    for folder in ("denied", "slow"):
        (served / folder).mkdir(exist_ok=True)
        (served / folder / "x.png").write_bytes(b"never served")
    rows = [(p, label, split) for p, label, split in items()]
    rows += [("nowhere/x.png", "class-0", "test"), ("denied/x.png", "class-0", "test")]
    rows += [("slow/x.png", "class-0", "test")]
    table = {
        "path": [r[0] for r in rows],
        "label": [r[1] for r in rows],
        "split": [r[2] for r in rows],
    }
    pq.write_table(pa.table(table), served / "broken.parquet")
    spec = user_dataset(
        "where-broken",
        {"format": "parquet", "root": url, "manifest": "broken.parquet", "timeout": 1},
        tmp_path,
    )
    test = spec.open().split("test")
    reasons = []
    for index in range(len(test) - 3, len(test)):
        with pytest.raises(BadImage) as caught:
            test.image(index)
        reasons.append(str(caught.value))
    assert reasons[0].endswith("nowhere/x.png: not found")
    assert reasons[1].endswith("denied/x.png: access denied (HTTP 403)")
    assert reasons[2].endswith("slow/x.png: no answer within 1 s (the dataset's timeout)")
    assert all("\n" not in r for r in reasons)


def test_a_changed_object_changes_the_fingerprint(s3):
    from harness.datasets.manifests import manifest
    from harness.datasets.remote import Store

    options, fs = s3
    store = Store.of("s3://shop", options, 30.0)

    def fingerprint() -> str:
        splits = {"train": "train", "test": "test"}
        return manifest(
            "where", "s3://shop/catalogue", splits, "items.parquet", store=store
        ).fingerprint

    before = fingerprint()
    path = "shop/catalogue/" + items()[0][0]
    original = fs.cat_file(path)
    fs.pipe(path, (FOLDER / items()[1][0]).read_bytes())
    try:
        after = fingerprint()
    finally:
        fs.pipe(path, original)  # other tests read the original
    assert before != after and fingerprint() == before


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("where", "error", "said"),
    [
        ("{url}/broken", "DatasetError", "/broken/items.csv: the store answered HTTP 500"),
        ("{url}/slow", "DatasetError", "/slow/items.csv: no answer within 1 s"),
        ("http://127.0.0.1:{closed}/c", "DatasetError", "the connection was refused"),
        ("{url}/nowhere", "DatasetUnavailable", "/nowhere/items.csv does not exist"),
    ],
)
def test_a_root_that_cannot_answer_fails_and_only_a_missing_one_is_unavailable(
    tmp_path, http_root, where, error, said
):
    """A server error, a stall or a refused connection is a failure naming the URL and
    what happened; only a definite 404 is 'does not exist' (a skip where skips are fine)."""
    from harness.errors import DatasetError, DatasetUnavailable

    url, _ = http_root
    root = where.format(url=url, closed=closed_port())
    table = {"format": "csv", "root": root, "manifest": "items.csv", "timeout": 1}
    spec = user_dataset("unanswered", table, tmp_path)
    start = time.perf_counter()
    with pytest.raises(DatasetError) as caught:
        spec.open()
    assert type(caught.value).__name__ == error
    assert isinstance(caught.value, DatasetUnavailable) == (error == "DatasetUnavailable")
    message = str(caught.value)
    assert said in message and f"manifest {root}/items.csv" in message and "\n" not in message
    assert time.perf_counter() - start < 10  # the timeout bounds a stall
