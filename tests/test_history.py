"""Regression tracking across runs: five runs in a reports directory, one cell's metric
drops significantly at run 4; the history command and the HTML report mark that drop."""

from html.parser import HTMLParser

import numpy as np

from harness import history
from harness.cli import main
from harness.report_files import write_reports
from harness.row import CellRow

CELL, STEADY = "d/b/knn", "d/b/linear"


def row(cell: str, correct: np.ndarray, started: str) -> CellRow:
    accuracy = float(correct.mean())
    return CellRow(
        **{
            "id": cell,
            "dataset": "d",
            "backbone": "b",
            "strategy": cell.rsplit("/", 1)[1],
            "outcome": "passed",
            "main_metric": "accuracy",
            "metrics": {"accuracy": accuracy},
            "ci": {"accuracy": [accuracy - 0.04, accuracy + 0.04]},
            "dataset_fingerprint": "f",
            "protocol": "split",
            "test_items_sha256": "s",
            "weights_sha256": f"w-{started}",
            "items": {"accuracy": correct.astype(float).tolist()},
        }
    )


def five_runs(reports, keep=None) -> None:
    rng = np.random.default_rng(0)
    good = rng.random(400) < 0.8
    for run in range(1, 6):
        started = f"2026-11-2{run}T10:00:00+00:00"
        flipped = good.copy()
        if run >= 4:  # run 4 gets 80 of the good items wrong
            flipped[np.flatnonzero(good)[:80]] = False
        provenance = {"started": started, "git_commit": str(run) * 40}
        write_reports(
            reports, provenance, [row(CELL, flipped, started), row(STEADY, good, started)], keep
        )


def test_the_history_marks_a_significant_drop_at_run_four(tmp_path, capsys):
    five_runs(tmp_path)
    found = history.from_reports(tmp_path)
    knn = found[CELL]
    assert len(knn) == 5 and [p.drop for p in knn] == [False, False, False, True, False]
    assert knn[3].change < -0.15 and knn[3].verdict == "worse" and knn[4].change == 0
    assert not any(p.drop for p in found[STEADY])
    assert main(["history", str(tmp_path), "--cell", "*knn"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{CELL} (accuracy)" and len(out) == 7
    assert "333333333333" in out[3] and "▼ significant drop" in out[4] and "(worse)" in out[4]
    assert out[-1] == "1 cells; 1 significant drops between consecutive runs"


def test_the_html_history_bands_the_interval_and_marks_the_drop(tmp_path):
    five_runs(tmp_path)
    page = (tmp_path / "latest.html").read_text()

    class Dots(HTMLParser):
        def __init__(self):
            super().__init__()
            self.dots, self.polygons, self.titles, self._in_title = [], 0, [], False

        def handle_starttag(self, tag, attrs):
            if tag == "circle":
                self.dots.append(dict(attrs)["fill"])
            self.polygons += tag == "polygon"
            self._in_title = tag == "title"

        def handle_data(self, data):
            if self._in_title:
                self.titles.append(data)
                self._in_title = False

    parser = Dots()
    parser.feed(page[page.index(">History<") :])
    assert parser.polygons == 2 and len(parser.dots) == 10  # a band and 5 runs per cell
    assert parser.dots.count("#d33") == 1  # the one significant drop, in red
    assert any("commit 444444444444" in t and "(worse)" in t for t in parser.titles)
    assert "## History" in (tmp_path / "latest.md").read_text()


def test_keep_runs_bounds_the_runs_folder(tmp_path):
    five_runs(tmp_path, keep=3)
    names = [p.name for p in history.run_dirs(tmp_path)]
    assert names == ["2026-11-23T100000+0000", "2026-11-24T100000+0000", "2026-11-25T100000+0000"]
