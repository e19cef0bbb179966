"""The end of a run: cell rows gathered on the controller (under pytest-xdist too, where
they arrive as JSON in each report's ``user_properties``), the terminal summary, the
report files, the CI summary page and MLflow."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from harness.bench import CELL_PROPERTY, RESULT_PROPERTY
from harness.errors import ShelfbenchError, one_line
from harness.provenance import now, run_provenance
from harness.row import CellRow


class ShelfReport:
    """Collects cell rows on the controller and writes the report at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.rows: dict[str, CellRow] = {}
        self.started = now()
        self.paths: list[Path] = []
        self.mlflow = ""
        self.notes: list[str] = []  # what could not be done at the end, one line each

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if CELL_PROPERTY not in props:
            self._checked(report)
            return
        static = json.loads(str(props[CELL_PROPERTY]))
        row = self.rows.setdefault(static["node"], CellRow(**static))
        if RESULT_PROPERTY in props:
            outcome, message = row.outcome, row.message
            row = self.rows[row.key] = CellRow.from_json(json.loads(str(props[RESULT_PROPERTY])))
            row.outcome, row.message, row.suite = outcome, message, static["suite"]
        if report.when == "call" or report.outcome != "passed":
            row.outcome = _outcome(report)
        if report.outcome != "passed":
            row.message = _message(report)

    def _checked(self, report: pytest.TestReport) -> None:
        """The rows of the cells a test function ran with the ``shelfbench`` fixture
        (``Bench.check``), one per call; a failure of the test is its last cell's."""
        if report.when != "call":
            return
        results = [json.loads(str(v)) for k, v in report.user_properties if k == RESULT_PROPERTY]
        for number, result in enumerate(results, 1):
            row = CellRow.from_json(result)
            self.rows[row.key] = row
            if number == len(results) and report.outcome != "passed":
                row.outcome, row.message = _outcome(report), _message(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        from harness.document import terminal
        from harness.report import unreadable_counts

        terminalreporter.write_sep("=", "shelfbench")
        terminalreporter.write_line(terminal(list(self.rows.values())))
        for row in self.rows.values():
            for warning in row.warnings:
                terminalreporter.write_line(f"warning {row.id}: {warning}", yellow=True)
            if counts := unreadable_counts(row):
                terminalreporter.write_line(
                    f"{row.id}: skipped unreadable images ({counts}), e.g. "
                    f"{', '.join(row.skipped.examples[:2])}"
                )
        for path in self.paths:
            terminalreporter.write_line(f"wrote {path}")
        if self.mlflow:
            terminalreporter.write_line(self.mlflow)
        for note in filter(None, self.notes):
            terminalreporter.write_line(note, yellow=True)

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
            self.notes.append(self._append_summary(Path(summary_file)))
        if self.config.getoption("--shelf-update-baseline"):
            target = self.config.getoption("--shelf-baseline") or directory / "baseline.json"
            self.paths += copy_run(directory / "latest.json", target)
        if uri := self.config.getoption("--shelf-mlflow"):
            self.mlflow = self._log_mlflow(uri, provenance, directory / "latest.html")

    def _append_summary(self, path: Path) -> str:
        """Append the results to the CI job's summary page (``$GITHUB_STEP_SUMMARY``); a
        line saying why not where it cannot be written (the run's verdict stands)."""
        from harness.document import step_summary

        try:
            with path.open("a", encoding="utf-8") as f:
                f.write(step_summary(list(self.rows.values())) + "\n")
        except OSError as exc:
            return (
                f"shelfbench: $GITHUB_STEP_SUMMARY = {path}: the job summary was not "
                f"written ({exc.strerror or exc}); it must name a file that can be appended to"
            )
        return ""

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
    traceback = getattr(report.longrepr, "reprtraceback", None)
    if crash is not None and traceback is not None:
        style = traceback.style
        if style != "value":  # a pytest.fail(pytrace=False) message is the text itself
            return crash.message
    return report.longreprtext.strip()
