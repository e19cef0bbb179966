"""The pytest plugin (entry point ``pytest11: shelfbench``): options, the ``shelfbench``
fixture that runs and records a cell, and the report written at the end of the session.

Results travel as JSON strings in ``user_properties``, so they reach the controller under
pytest-xdist, which alone writes the tables and files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.baseline import BaselineError, Run, compare_cell, load_run
from harness.errors import ShelfbenchError, Unavailable, one_line
from harness.gallery import changed
from harness.paths import cache_root, regular_file
from harness.provenance import now, run_provenance


def worker_gpu(worker: str, visible: str | None, count: int) -> str | None:
    """The GPU pytest-xdist worker ``gwI`` takes: the I-th (mod their number) of the GPUs
    ``CUDA_VISIBLE_DEVICES`` lists where it is set, else of the ``count`` the driver
    lists; None when there are none."""
    gpus = [str(i) for i in range(count)] if visible is None else visible.split(",")
    gpus = [gpu.strip() for gpu in gpus if gpu.strip()]
    return gpus[int(worker.removeprefix("gw")) % len(gpus)] if gpus else None


def pin_worker_gpu(worker: str) -> None:
    """Give pytest-xdist worker ``worker`` one GPU, before torch initialises CUDA, so that
    ``pytest -n N`` on N GPUs runs N cells at once, one per GPU."""
    if shutil.which("nvidia-smi") is None:
        return
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    count = sum(line.startswith("GPU ") for line in listed.splitlines())
    gpu = worker_gpu(worker, os.environ.get("CUDA_VISIBLE_DEVICES"), count)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def configure_worker(worker: str) -> None:
    """What an xdist worker sets before torch loads: its GPU, and passive OpenMP waiting
    (workers share the cores, and one worker's training uses all of them: a thread that
    spins while it waits steals them; a smoke run took 90 s with -n 2 against 39 s)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    pin_worker_gpu(worker)


CELL_PROPERTY = "shelfbench.cell"
RESULTS = pytest.StashKey[dict[str, Any]]()  # incumbent cell id → its CellResult, this process's
INCUMBENTS = pytest.StashKey[set[str]]()  # ids of the cells an [upgrade] compares with
RESULT_PROPERTY = "shelfbench.result"
BASELINE = pytest.StashKey["Run | None"]()  # the --shelf-baseline run, read at configure


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shelfbench")
    group.addoption(
        "--shelf-cache",
        type=Path,
        default=None,
        help="embedding cache directory (default $SHELFBENCH_CACHE or ~/.cache/shelfbench)",
    )
    group.addoption(
        "--shelf-reports",
        type=Path,
        default=None,
        help="where latest.json/.md/.csv go (default <rootdir>/reports)",
    )
    group.addoption(
        "--shelf-baseline",
        type=Path,
        default=None,
        help="a stored run (report .json with .items.npz beside it): fail cells that are "
        "significantly worse than it by more than the suite's max_drop",
    )
    group.addoption(
        "--shelf-update-baseline",
        action="store_true",
        help="write this run as the new baseline (to --shelf-baseline, default "
        "<rootdir>/reports/baseline.json)",
    )
    group.addoption(
        "--shelf-profile",
        default="default",
        help="also run the cells a suite marks with this profile (e.g. full: the slow "
        "fine-tuning cells); cells without a profile always run",
    )
    group.addoption(
        "--shelf-mlflow",
        nargs="?",
        const="sqlite:///mlflow.db",
        default=None,
        metavar="URI",
        help="log one MLflow run per cell, and the HTML report, to URI (default "
        "sqlite:///mlflow.db; any tracking URI: http://host:5000, ./mlruns); put it after "
        "the test paths, or write --shelf-mlflow=URI",
    )
    group.addoption(
        "--shelf-keep-runs",
        type=int,
        default=None,
        metavar="N",
        help="keep only the newest N run copies under <reports>/runs (default: all)",
    )
    group.addoption(
        "--shelf-recompute",
        action="store_true",
        help="compute every cell's result again, even where the outcome cache holds it "
        "(embeddings stay cached)",
    )
    group.addoption(
        "--shelf-require",
        action="store_true",
        help="fail, instead of skip, a cell whose data or weights are missing",
    )


# Every cell carries its backbone's family and kind as markers, and "clip" for open_clip
# models, so `-k clip`, `-k ssl` or `-k vit` select the way the study groups backbones.
CELL_MARKERS = {
    "shelfbench": "a benchmark cell",
    "supervised": "a cell of a supervised backbone",
    "ssl": "a cell of a self-supervised backbone",
    "contrastive": "a cell of a text-image contrastive backbone",
    "untrained": "a cell of a random-init test backbone",
    "cnn": "a cell of a convolutional backbone",
    "vit": "a cell of a vision-transformer backbone",
    "clip": "a cell of an open_clip (CLIP-style) backbone",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, description in CELL_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        configure_worker(worker)
    try:
        config.stash[BASELINE] = check_options(config, controller=not worker)
    except ShelfbenchError as exc:
        raise pytest.UsageError(f"shelfbench: {exc}") from None
    if not worker:
        config.pluginmanager.register(ShelfReport(config), "shelfbench-report")


def check_options(config: pytest.Config, controller: bool) -> Run | None:
    """Check every path the options name before any cell runs (the cache, the reports
    directory, the baseline to read or the run to write, the MLflow server), and read
    the baseline once; returns it."""
    from harness.ownership import check_reports_dir, check_run_target
    from harness.paths import directory

    directory(config.getoption("--shelf-cache") or cache_root(), "the embedding cache")
    baseline = config.getoption("--shelf-baseline")
    if not controller:
        return (
            None
            if baseline is None or config.getoption("--shelf-update-baseline")
            else (load_run(baseline))
        )
    if (reports := config.getoption("--shelf-reports")) is not None:
        check_reports_dir(reports, "--shelf-reports")
    keep = config.getoption("--shelf-keep-runs")
    if keep is not None and keep < 1:
        raise ShelfbenchError(f"--shelf-keep-runs {keep}: must be an integer >= 1")
    if config.getoption("--shelf-update-baseline"):
        check_run_target(baseline or config.rootpath / "reports" / "baseline.json")
        return None
    if uri := config.getoption("--shelf-mlflow"):
        from harness.tracking import check_server

        check_server(uri)
    if baseline is not None:
        regular_file(baseline, "--shelf-baseline", BaselineError)
        return load_run(baseline)
    return None


def load_cells(path: Path) -> tuple[Any, ...]:
    """The cells of a suite file, for ``pytest.mark.parametrize``; a mistake in the file
    fails collection with one line instead of a traceback."""
    from harness.suite import load_suite

    try:
        return load_suite(path).cells
    except ShelfbenchError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from harness.backbones import BACKBONES
    from harness.backbones.adapters import has_text
    from harness.suite import Cell

    for item in items:
        cell = getattr(getattr(item, "callspec", None), "params", {}).get("cell")
        if isinstance(cell, Cell) and cell.incumbent is not None:
            item.config.stash.setdefault(INCUMBENTS, set()).add(cell.incumbent.id)
        if isinstance(cell, Cell):
            spec = BACKBONES.get(cell.backbone)
            markers = ["shelfbench", spec.family, spec.kind]
            for marker in markers + (["clip"] if has_text(spec) else []):
                item.add_marker(marker)
            static = {
                "id": cell.id,
                "dataset": cell.dataset,
                "backbone": cell.backbone,
                "strategy": cell.strategy,
                "suite": cell.suite,
            }
            item.user_properties.append((CELL_PROPERTY, json.dumps(static)))


class Bench:
    """The ``shelfbench`` fixture: ``shelfbench.check(cell)`` runs, records and gates."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        config = request.config
        self.cache = config.getoption("--shelf-cache") or cache_root()
        self._require = config.getoption("--shelf-require")

    def check(self, cell: Any) -> dict[str, Any]:
        """Run ``cell``, record its result row, and fail if a metric is below its floor."""
        if cell.run_profile not in {"default", self._request.config.getoption("--shelf-profile")}:
            pytest.skip(
                f"cell of the {cell.run_profile!r} profile; run it with "
                f"--shelf-profile {cell.run_profile}"
            )
        try:
            with self._terminal():
                result = self._run(cell)
        except ShelfbenchError as exc:
            error = exc
        else:
            error = None
        if isinstance(error, Unavailable) and not self._require:
            pytest.skip(str(error))
        if error is not None:
            pytest.fail(str(error), pytrace=False)
        row = result.row()
        failures = result.below_floor(cell) + self._against_baseline(cell, result, row)
        failures += self._against_incumbent(cell, result, row)
        index_loss = result.index_loss()
        if index_loss is not None and index_loss.regression:
            failures.append(
                f"the index loses more than max_index_loss against exact search: "
                f"{index_loss.line().replace(' → ', ' (exact) → ', 1)} (under the index)"
            )
        properties = self._request.node.user_properties
        properties.append((RESULT_PROPERTY, json.dumps(row)))
        properties += [(f"metric.{name}", value) for name, value in result.metrics.items()]
        if failures:
            pytest.fail("\n".join(failures + result.warnings), pytrace=False)
        return row

    def _run(self, cell: Any) -> Any:
        """The cell's result; an incumbent's is computed once per process and kept, since
        its [upgrade] candidates need it (it may have run here already, or runs now)."""
        from harness.cell import run_cell

        stash = self._request.config.stash
        done = stash.setdefault(RESULTS, {})
        if cell.id in done:
            return done[cell.id]
        recompute = self._request.config.getoption("--shelf-recompute")
        result = run_cell(cell, self.cache, recompute)
        if cell.id in stash.get(INCUMBENTS, set()):  # kept for its candidates only
            done[cell.id] = result
        return result

    def _against_incumbent(self, cell: Any, result: Any, row: dict[str, Any]) -> list[str]:
        """Under [upgrade], compare a candidate's cell with its incumbent's on the same test
        items; record the comparisons in ``row`` and return the regressions. A candidate
        cell with no incumbent twin passes ungated, with a warning saying so."""
        if cell.incumbent is None:
            if cell.upgrade_from:
                row["warnings"].append(
                    f"the suite has no {cell.upgrade_from} cell of the same dataset and "
                    "strategy, so [upgrade] did not gate it; declare one to compare"
                )
            return []
        try:
            with self._terminal():
                incumbent = self._run(cell.incumbent)
            gated = [result.main_metric, *(f.metric for f in cell.floors)]
            comparisons = compare_cell(
                incumbent.row(),
                {k: np.asarray(v) for k, v in incumbent.items.items()},
                row,
                {k: np.asarray(v) for k, v in result.items.items()},
                list(dict.fromkeys(gated)),
                cell.upgrade_max_drop,
                cell.gate.resamples,
                cell.gate.seed,
            )
        except ShelfbenchError as exc:
            return [f"cannot compare with the incumbent {cell.incumbent.id}: {exc}"]
        row["upgrade"] = [
            {
                **vars(c),
                "verdict": c.verdict,
                "regression": c.regression,
                "incumbent": cell.incumbent.id,
            }
            for c in comparisons
        ]
        if moved := changed(incumbent.items, result.items):
            row["changed"] = {"against": cell.incumbent.id, **moved}
        return [
            f"the upgrade from {cell.incumbent.backbone} is worse: {c.line()}"
            for c in comparisons
            if c.regression
        ]

    def _against_baseline(self, cell: Any, result: Any, row: dict[str, Any]) -> list[str]:
        """Compare the main and floored metrics with the baseline run, if one is given;
        record the comparisons in ``row`` and return the regressions as failure lines."""
        try:
            baseline = self._baseline()
            if baseline is None:
                return []
            if cell.id not in baseline.items:
                row["warnings"].append(
                    f"not in the baseline {baseline.path}, so not gated against it; "
                    "add it with --shelf-update-baseline"
                )
                return []
            gated = [result.main_metric, *(f.metric for f in cell.floors)]
            comparisons = compare_cell(
                baseline.rows[cell.id],
                baseline.items[cell.id],
                row,
                {k: np.asarray(v) for k, v in result.items.items()},
                list(dict.fromkeys(gated)),
                cell.gate.max_drop,
                cell.gate.resamples,
                cell.gate.seed,
            )
        except BaselineError as exc:
            return [str(exc)]
        row["baseline"] = [{**vars(c), "verdict": c.verdict} for c in comparisons]
        if moved := changed(baseline.items[cell.id], result.items):
            row["changed"] = {"against": f"{cell.id} in {baseline.path}", **moved}
        return [
            f"regression against {baseline.path}: {c.line()}" for c in comparisons if c.regression
        ]

    def _baseline(self) -> Run | None:
        """The --shelf-baseline run, read once per process when pytest started."""
        return self._request.config.stash.get(BASELINE, None)

    @contextlib.contextmanager
    def _terminal(self) -> Iterator[None]:
        """Let progress bars reach the terminal through pytest's output capture."""
        capman = self._request.config.pluginmanager.getplugin("capturemanager")
        if capman is None or os.environ.get("PYTEST_XDIST_WORKER"):
            yield
            return
        with capman.global_and_fixture_disabled():
            yield


@pytest.fixture
def shelfbench(request: pytest.FixtureRequest) -> Bench:
    return Bench(request)


class ShelfReport:
    """Collects cell rows on the controller and writes the report at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.rows: dict[str, dict[str, Any]] = {}
        self.started = now()
        self.paths: list[Path] = []
        self.mlflow = ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if CELL_PROPERTY not in props:
            return
        static = json.loads(props[CELL_PROPERTY])
        row = self.rows.setdefault(static["id"], {**static, "outcome": "passed"})
        if RESULT_PROPERTY in props:
            row.update(json.loads(props[RESULT_PROPERTY]))
        if report.when == "call" or report.outcome != "passed":
            row["outcome"] = _outcome(report)
        if report.outcome != "passed":
            row["message"] = _message(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        from harness.document import terminal
        from harness.report import unreadable_counts

        terminalreporter.write_sep("=", "shelfbench")
        terminalreporter.write_line(terminal(list(self.rows.values())))
        reasons: dict[tuple[str, str], list[str]] = {}
        for row in self.rows.values():
            if row.get("message"):
                key = (row["outcome"], row["message"].splitlines()[0])
                reasons.setdefault(key, []).append(row["id"])
        for (outcome, reason), ids in reasons.items():
            terminalreporter.write_line(f"{outcome} {', '.join(ids)}: {reason}")
        for row in self.rows.values():
            for warning in row.get("warnings", []):
                terminalreporter.write_line(f"warning {row['id']}: {warning}", yellow=True)
            if counts := unreadable_counts(row):
                terminalreporter.write_line(
                    f"{row['id']}: skipped unreadable images ({counts}), e.g. "
                    f"{', '.join(row['skipped']['examples'][:2])}"
                )
        for path in self.paths:
            terminalreporter.write_line(f"wrote {path}")
        if self.mlflow:
            terminalreporter.write_line(self.mlflow)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.rows:
            return
        from harness.report_files import copy_run, write_reports

        directory = self.config.getoption("--shelf-reports") or self.config.rootpath / "reports"
        provenance = {
            **run_provenance(self.config.rootpath),
            "started": self.started,
            "finished": now(),
        }
        keep = self.config.getoption("--shelf-keep-runs")
        self.paths = write_reports(directory, provenance, list(self.rows.values()), keep)
        if summary_file := os.environ.get("GITHUB_STEP_SUMMARY"):
            from harness.document import step_summary

            with open(summary_file, "a", encoding="utf-8") as f:  # the job's page: appended
                f.write(step_summary(list(self.rows.values())) + "\n")
        if self.config.getoption("--shelf-update-baseline"):
            target = self.config.getoption("--shelf-baseline") or directory / "baseline.json"
            self.paths += copy_run(directory / "latest.json", target)
        if uri := self.config.getoption("--shelf-mlflow"):
            self.mlflow = self._log_mlflow(uri, provenance, directory / "latest.html")

    def _log_mlflow(self, uri: str, provenance: dict[str, Any], html: Path) -> str:
        """Log the run to MLflow; a line saying where, or why not (never a traceback)."""
        from harness.tracking import log_run

        try:
            run_id = log_run(uri, provenance, list(self.rows.values()), html)
        except ShelfbenchError as exc:
            return f"shelfbench: error: {exc}"
        except Exception as exc:  # mlflow raises its own and its stores' exceptions
            reason = one_line(f"{type(exc).__name__}: {exc}", 300)
            return f"shelfbench: error: logging to MLflow at {uri} failed: {reason}"
        return f"logged to MLflow at {uri}: run {run_id} (experiment 'shelfbench')"


def _outcome(report: pytest.TestReport) -> str:
    if report.when != "call" and report.failed:
        return "error"
    return report.outcome


def _message(report: pytest.TestReport) -> str:
    """Why a cell did not pass: the skip reason, the one-line failure, or for an unexpected
    exception its type and message (never the first line of the traceback's code)."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(report.longrepr, "reprtraceback", None) is not None:
        style = report.longrepr.reprtraceback.style
        if style != "value":  # a pytest.fail(pytrace=False) message is the text itself
            return crash.message
    return report.longreprtext.strip()
