"""The pytest plugin (entry point ``pytest11: shelfbench``): its options, the paths they
name checked before anything runs, suite files collected as cells (``harness.collect``),
the ``shelfbench`` fixture (``harness.bench``), and the report written at the end of the
session (``harness.session``). Importing it does nothing else: an xdist worker takes its
GPU in ``pytest_configure``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.baseline import BaselineError, Run, load_run
from harness.bench import BASELINE, INCUMBENTS, Bench
from harness.errors import ShelfbenchError
from harness.paths import cache_root, regular_file
from harness.settings import Count, argument

# The plugin's options: name -> argparse keywords (each type checks its value's range).
OPTIONS: dict[str, dict[str, Any]] = {
    "--shelf-cache": dict(
        type=Path,
        help="embedding cache directory (default $SHELFBENCH_CACHE or ~/.cache/shelfbench)",
    ),
    "--shelf-reports": dict(
        type=Path, help="where latest.json/.md/.csv go (default <rootdir>/reports)"
    ),
    "--shelf-baseline": dict(
        type=Path,
        help="a stored run (report .json with .items.npz beside it): fail cells that are "
        "significantly worse than it by more than the suite's max_drop",
    ),
    "--shelf-update-baseline": dict(
        action="store_true",
        help="write this run as the new baseline (to --shelf-baseline, default "
        "<rootdir>/reports/baseline.json)",
    ),
    "--shelf-profile": dict(
        default="default",
        help="also run the cells a suite marks with this profile (e.g. full: the slow "
        "fine-tuning cells); cells without a profile always run",
    ),
    "--shelf-mlflow": dict(
        nargs="?",
        const="sqlite:///mlflow.db",
        metavar="URI",
        help="log one MLflow run per cell, and the HTML report, to URI (default "
        "sqlite:///mlflow.db; any tracking URI: http://host:5000, ./mlruns); put it after "
        "the test paths, or write --shelf-mlflow=URI",
    ),
    "--shelf-keep-runs": dict(
        type=argument(Count),
        metavar="N",
        help="keep only the newest N run copies under <reports>/runs (default: all)",
    ),
    "--shelf-recompute": dict(
        action="store_true",
        help="compute every cell's result again, even where the outcome cache holds it "
        "(embeddings stay cached)",
    ),
    "--shelf-require": dict(
        action="store_true",
        help="fail, instead of skip, a cell whose data or weights are missing",
    ),
    "--shelf-allow-missing": dict(
        action="store_true",
        help="skip a cell whose data or weights are missing even where the run gates (a "
        "baseline, an [upgrade], $CI), which otherwise fails it",
    ),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shelfbench")
    for name, keywords in OPTIONS.items():
        group.addoption(name, **keywords)


# Every cell carries its backbone's family and kind as markers, and "clip" for open_clip
# models, so `-k clip`, `-k ssl` or `-k vit` select the way the study groups backbones.
CELL_MARKERS = {
    "shelfbench": "every benchmark cell",
    "supervised": "a cell of a supervised backbone",
    "ssl": "a cell of a self-supervised backbone",
    "contrastive": "a cell of a text-image contrastive backbone",
    "untrained": "a cell of a random-init test backbone",
    "cnn": "a cell of a convolutional backbone",
    "vit": "a cell of a vision-transformer backbone",
    "clip": "a cell of an open_clip (CLIP-style) backbone",
    "vectors": "a cell of precomputed embeddings ([backbones.NAME] vectors = ...)",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, description in CELL_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: shelfbench: {description}")
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        from harness.runtime import configure_worker

        configure_worker(worker)
    try:
        config.stash[BASELINE] = check_options(config, controller=not worker)
    except ShelfbenchError as exc:
        raise pytest.UsageError(f"shelfbench: {exc}") from None
    if not worker:
        from harness.session import ShelfReport

        config.pluginmanager.register(ShelfReport(config), "shelfbench-report")


def check_options(config: pytest.Config, controller: bool) -> Run | None:
    """Check the runtime variables and every path the options name before any cell runs
    (the cache, the reports directory, the baseline to read or the run to write, the
    MLflow server), and read the baseline once; returns it."""
    from harness.ownership import check_reports_dir, check_run_target
    from harness.paths import check_cache
    from harness.runtime import check_environment

    check_environment()
    cache = config.getoption("--shelf-cache") or cache_root()
    if check_cache(cache) and controller:
        print(
            f"shelfbench: the cache {cache} is read-only: what it holds is served, and "
            "nothing computed in this run is kept"
        )
    baseline = config.getoption("--shelf-baseline")
    if not controller:
        return (
            None
            if baseline is None or config.getoption("--shelf-update-baseline")
            else (load_run(baseline))
        )
    if (reports := config.getoption("--shelf-reports")) is not None:
        check_reports_dir(reports, "--shelf-reports")
    if uri := config.getoption("--shelf-mlflow"):
        from harness.tracking import check_server

        check_server(uri)
    if config.getoption("--shelf-update-baseline"):
        check_run_target(baseline or config.rootpath / "reports" / "baseline.json")
        return None
    if baseline is not None:
        regular_file(baseline, "--shelf-baseline", BaselineError)
        return load_run(baseline)
    return None


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    """A suite file (``*.toml`` with a ``[suite]`` table) is collected as its cells."""
    from harness.collect import SuiteFile, is_suite_file

    if file_path.suffix == ".toml" and is_suite_file(file_path):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


def load_cells(path: Path) -> tuple[Any, ...]:
    """The cells of a suite file, for a Python test's ``pytest.mark.parametrize`` (suite
    files are collected without one); a mistake in the file fails collection with one
    line instead of a traceback."""
    from harness.suite import load_suite

    try:
        return load_suite(path).cells
    except ShelfbenchError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Cells a Python test parametrizes get the markers suite-file items get; and the
    incumbents an [upgrade] compares with are noted, so their results are kept."""
    from harness.collect import label
    from harness.suite import Cell

    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None:
            cell = getattr(getattr(item, "callspec", None), "params", {}).get("cell")
            if isinstance(cell, Cell):
                label(item, cell)
        if isinstance(cell, Cell) and cell.incumbent is not None:
            incumbent = cell.incumbent.node(item.config.rootpath)
            item.config.stash.setdefault(INCUMBENTS, set()).add(incumbent)


@pytest.fixture
def shelfbench(request: pytest.FixtureRequest) -> Bench:
    return Bench(request.config, request.node)
