"""The report document: every user string reaches HTML escaped, Markdown and HTML show the
same sections in the same order, and the terminal shows the upgrade table."""

from html.parser import HTMLParser

import numpy as np
import pytest

from harness.blocks import Folded, Heading
from harness.datasets.base import DATASETS, ArraySplit, Dataset, DatasetSpec
from harness.document import build, markdown, terminal
from harness.records import Cost, Skipped
from harness.report_html import html
from harness.row import CellRow, RowError

MARK = "<shelfbenchxss src=x onerror=alert(1)>"


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


@pytest.fixture(autouse=True)
def marked_dataset(extend) -> None:
    """A dataset whose name and class names are markup, with images to show."""
    name = f"{MARK}-data"
    images = np.zeros((12, 8, 8), np.uint8)
    labels = np.arange(12) % 2
    split = ArraySplit(images, labels)
    dataset = Dataset(name, "fp", {"train": split, "test": split}, (MARK, MARK + "2"))
    extend(DATASETS, DatasetSpec(name, "x", (), ("train", "test"), "split", lambda: dataset))


def shown(n: int = 2) -> dict:
    return {
        "queries": list(range(n)),
        "first_hit": [0, -1][:n],
        "top5": [[1, 2, 3, 4, 5]] * n,
        "relevant": [[True, False, True, False, False]] * n,
    }


def marked_rows() -> list[CellRow]:
    """Rows as a schema-1 report holds them (sub-records as free dicts), markup in every
    string a user names."""
    dataset = f"{MARK}-data"
    backbone, strategy = f"{MARK}-bb", "knn"
    cell = f"{dataset}/{backbone}/{strategy}"
    base = {
        "id": cell,
        "dataset": dataset,
        "backbone": backbone,
        "strategy": strategy,
        "outcome": "failed",
        "message": f"{MARK} failed",
        "protocol": "split",
        "metrics": {"accuracy": 0.5, "mmp@5": 0.4},
        "floors": {"accuracy": 0.6},
        "ci": {"accuracy": [0.4, 0.6], "mmp@5": [0.3, 0.5]},
        "seconds": {"embed": 1.0, "fit": 1.0, "total": 2.0, "cost": 2.0},
        "cache": MARK,
        "precision": MARK,
        "main_metric": "mmp@5",
        "warnings": [f"{MARK} warning"],
        "skipped": {"test": 1, "examples": [f"/data/{MARK}.png"]},
        "cost": {
            "seconds": {"embed": 1.0, "train": 0.5, "eval": 0.5, "total": 2.0},
            "gflops_per_image": 1.0,
            "train_gflops": 0.0,
            "trainable_params": 0,
            "peak_rss_mb": 1.0,
        },
        "gallery": {"sample": shown(), "worst": shown(1)},
        "changed": {"against": f"{MARK} baseline", "old": shown(1), "new": shown(1)},
        "upgrade": [
            {
                "incumbent": f"{dataset}/{MARK}-old/{strategy}",
                "metric": "mmp@5",
                "old": 0.5,
                "new": 0.4,
                "diff": -0.1,
                "low": -0.2,
                "high": -0.05,
                "max_drop": 0.01,
                "verdict": "worse",
                "regression": True,
            }
        ],
    }
    other = {**base, "id": f"{dataset}/{MARK}-b2/linear", "backbone": f"{MARK}-b2"}
    other = {**other, "strategy": "linear", "gallery": {}, "changed": {}, "upgrade": []}
    return [CellRow.from_json(base, schema=1), CellRow.from_json(other, schema=1)]


def test_no_user_string_becomes_markup_in_the_html():
    rows = marked_rows()
    page = html({"project": MARK, "started": "2026-11-30T00:00:00+00:00"}, rows)
    parser = Tags()
    parser.feed(page)
    names = {tag for tag, _ in parser.tags}
    assert "shelfbenchxss" not in names and "script" not in names
    assert not [attrs for _, attrs in parser.tags if any(k.startswith("on") for k, _ in attrs)]
    assert page.count("&lt;shelfbenchxss") > 10  # the text is there, shown as text
    assert "<img" in page and "What changed against" in page  # galleries were drawn


def test_markdown_and_html_show_the_same_sections_in_the_same_order():
    rows = marked_rows()
    blocks = build({}, rows)
    headings = [b.text for b in blocks if isinstance(b, Heading)]
    # the verdict first (with the upgrade table), then the recommendation; provenance last
    assert headings[:3] == ["shelfbench results", "Verdict", "Recommendation"]
    assert isinstance(blocks[-1], Folded) and blocks[-1].title == "Provenance"
    text = markdown(blocks)
    page = html({}, rows)
    at = [text.index(f"{'#' * b.level} {b.text}") for b in blocks if isinstance(b, Heading)]
    assert at == sorted(at)
    from harness.report_html import esc

    at_html = [page.index(f">{esc(b.text)}</h") for b in blocks if isinstance(b, Heading)]
    assert at_html == sorted(at_html)


def test_the_terminal_summary_has_the_upgrade_table():
    out = terminal(marked_rows())
    assert out.startswith("Verdict\nFAILED: ")
    assert "Upgrade: each candidate cell against the incumbent's" in out
    assert "worse beyond the tolerance" in out


def test_a_row_read_back_is_checked_field_by_field():
    (row,) = marked_rows()[:1]
    data = row.to_json()
    assert CellRow.from_json(data) == row
    assert {"verdict", "regression"} <= set(data["upgrade"][0])  # for a report's readers
    with pytest.raises(RowError, match=r"cost\.seconds\.total: .*valid number"):
        CellRow.from_json({**data, "cost": {**data["cost"], "seconds": {"total": "fast"}}})
    with pytest.raises(RowError, match="schema 9"):
        CellRow.from_json(data, schema=9)


def test_a_report_written_before_rows_were_typed_still_loads():
    """A schema-1 run written by shelfbench before CellRow (its rows lack result_cache and
    computed_seconds) loads as typed rows, the missing fields at their defaults."""
    from pathlib import Path

    from harness.baseline import load_run

    fixture = Path(__file__).parents[1] / "fixtures" / "reports" / "schema-1-before-typed-rows.json"
    run = load_run(fixture)
    knn = run.rows["fashion-mnist/effnet-lite0/knn"]
    assert isinstance(knn, CellRow) and knn.metrics["mmp@5"] == 0.8077000000000001
    assert knn.result_cache == "miss" and knn.computed_seconds == {} and knn.outcome == "passed"
    # Its free-dict sub-records are read as the typed records of schema 2.
    assert isinstance(knn.cost, Cost) and knn.cost.total > 0 and knn.node == ""
    assert knn.gate.max_drop == 0.01 and isinstance(knn.skipped, Skipped)
    assert run.items["fashion-mnist/effnet-lite0/knn"]["accuracy"].shape == (2000,)


def test_a_number_run_at_another_precision_than_its_floor_says_so(tmp_path):
    from harness.report import table
    from harness.suite import load_suite

    (tmp_path / "s.toml").write_text(
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        'strategies = ["knn"]\n[floors."synthetic-products/test-vit/knn"]\n'
        'accuracy = { floor = 0.9, measured = 0.92, date = "2026-12-04", machine = "m", '
        'precision = "fp32" }\n'
    )
    (cell,) = load_suite(tmp_path / "s.toml").cells
    row = CellRow(cell.id, metrics={"accuracy": 0.8}, floors={"accuracy": 0.9}, precision="bf16")
    row.floors_precision = {"accuracy": "fp32"}
    shown = table([row], ["accuracy"])
    assert shown.rows[0][2:4] == ["0.8000 ✗", "bf16 (floors at fp32)"]
    (line,) = row.below_floor(cell)
    assert "(measured 0.9200 on 2026-12-04 at fp32; this run: bf16)" in line
    row.precision = "fp32"
    assert table([row], ["accuracy"]).rows[0][2:4] == ["0.8000 ✗", "fp32"]
    assert "this run" not in row.below_floor(cell)[0]
    bad = (tmp_path / "s.toml").read_text().replace('"fp32"', '"fp8"')
    (tmp_path / "s.toml").write_text(bad)
    with pytest.raises(Exception, match="precision"):
        load_suite(tmp_path / "s.toml")


def test_the_cost_table_says_which_cell_of_the_run_paid_for_the_embeddings():
    """The ann suite's first cell computes the embeddings the default knn cell then reads:
    both rows count them (their cost as recorded), and the table says who paid."""
    from harness.records import Cost
    from harness.report import cost_table

    def row(cell: str, cache: str, keys: dict) -> CellRow:
        cost = Cost({"embed": 80.0, "train": 1.0, "eval": 1.0, "total": 82.0})
        return CellRow(cell, metrics={"accuracy": 0.8}, cache=cache, embedding_keys=keys,
                       cost=cost)  # fmt: skip

    shared = {"train": "k1", "test": "k2"}
    rows = [
        row("d/b/knn@faiss:HNSW32", "miss", shared),
        row("d/b/knn", "hit", shared),
        row("d/c/knn", "hit", {"train": "k3", "test": "k4"}),
    ]
    table = cost_table(rows)
    by = {line[0]: (line[3], line[table.headers.index("embedded by")]) for line in table.rows}
    assert by == {
        "d/b/knn@faiss:HNSW32": ("80.0", "this cell"),
        "d/b/knn": ("80.0", "d/b/knn@faiss:HNSW32"),
        "d/c/knn": ("80.0", "an earlier run"),
    }


def test_a_cached_heat_map_is_drawn_again_when_its_sections_are_named_otherwise():
    """A dataset's heat-map column is titled by the whole run (``catalogue (a)`` once
    another suite declares a ``catalogue`` too): the plot cache keys on those titles."""
    from harness.blocks import Plot
    from harness.report_html import plot

    rows = [
        CellRow(
            f"catalogue/{b}/knn",
            dataset="catalogue",
            backbone=b,
            strategy="knn",
            suite="a",
            metrics={"accuracy": 0.5 + i / 10},
        )
        for i, b in enumerate(("b1", "b2"))
    ]
    alone = plot(Plot("heat_map", "knn", rows))
    shared = plot(Plot("heat_map", "knn", rows, lambda r: f"{r.dataset} ({r.suite})"))
    assert shared != alone and plot(Plot("heat_map", "knn", rows)) == alone
