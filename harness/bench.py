"""What a benchmark cell does under pytest: run (or read) the cell, record its row for the
report, and fail on a floor, a baseline, an [upgrade] incumbent or an index's loss."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from harness.baseline import BaselineError, Run, gate
from harness.errors import ShelfbenchError, Unavailable
from harness.paths import cache_root
from harness.row import CellRow

if TYPE_CHECKING:
    from harness.suite import Cell

CELL_PROPERTY = "shelfbench.cell"
RESULT_PROPERTY = "shelfbench.result"
RESULTS = pytest.StashKey[dict[str, CellRow]]()  # incumbent's node id → its CellRow, this process's
INCUMBENTS = pytest.StashKey[set[str]]()  # node ids of the cells an [upgrade] compares with
BASELINE = pytest.StashKey["Run | None"]()  # the --shelf-baseline run, read at configure


class Bench:
    """Runs, records and gates cells for one test item (``node``); the ``shelfbench``
    fixture gives one to a test function: ``shelfbench.check(cell)``."""

    def __init__(self, config: pytest.Config, node: pytest.Item) -> None:
        self.config = config
        self.node = node
        self.cache = config.getoption("--shelf-cache") or cache_root()

    def check(self, cell: Cell) -> CellRow:
        """Run ``cell``, record its result row, and fail if a metric is below its floor,
        or it regresses against the baseline, its incumbent or exact search."""
        if cell.run_profile not in {"default", self.config.getoption("--shelf-profile")}:
            pytest.skip(
                f"cell of the {cell.run_profile!r} profile; run it with "
                f"--shelf-profile {cell.run_profile}"
            )
        try:
            with self._terminal():
                result = self._run(cell)
        except ShelfbenchError as exc:  # one line, raised outside this block: no chain
            unavailable, message = isinstance(exc, Unavailable), str(exc)
        else:
            unavailable, message = False, ""
        if unavailable and (gating := self._gating(cell)) is None:
            pytest.skip(message)
        if unavailable:
            pytest.fail(
                f"{message}; a cell that could not run does not pass {gating}", pytrace=False
            )
        if message:
            pytest.fail(message, pytrace=False)
        row = result.copy()
        failures = result.below_floor(cell) + self._against_baseline(cell, result, row)
        failures += self._against_incumbent(cell, result, row)
        index_loss = result.index_loss()
        if index_loss is not None and index_loss.regression:
            failures.append(
                f"the index loses more than max_index_loss against exact search: "
                f"{index_loss.line().replace(' → ', ' (exact) → ', 1)} (under the index)"
            )
        properties = self.node.user_properties
        properties.append((RESULT_PROPERTY, json.dumps(row.to_json())))
        properties += [(f"metric.{name}", value) for name, value in result.metrics.items()]
        if failures:
            pytest.fail("\n".join(failures + result.warnings), pytrace=False)
        return row

    def _gating(self, cell: Cell) -> str | None:
        """Why a cell that cannot run fails instead of being skipped (None: it is skipped).
        A gate that could not judge must not pass: under a baseline, an [upgrade] or $CI,
        a missing dataset or weights file fails the cell unless the suite's ``[gate]
        unavailable = "skip"`` or ``--shelf-allow-missing`` says skipping is fine."""
        if self.config.getoption("--shelf-require"):
            return "under --shelf-require"
        policy = cell.gate.unavailable
        if policy == "skip" or self.config.getoption("--shelf-allow-missing"):
            return None
        if policy == "fail":
            return 'where the suite says [gate] unavailable = "fail"'
        reasons = []
        if self.config.stash.get(BASELINE, None) is not None:
            reasons.append("--shelf-baseline")
        if cell.incumbent is not None or cell.upgrade_from:
            reasons.append("[upgrade]")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            reasons.append("$CI")
        if not reasons:
            return None
        return (
            f"in a run that gates ({', '.join(reasons)}): provide it, or allow skipping "
            'with [gate] unavailable = "skip" or --shelf-allow-missing'
        )

    def _run(self, cell: Cell) -> CellRow:
        """The cell's result; an incumbent's is computed once per process and kept, since
        its [upgrade] candidates need it (it may have run here already, or runs now)."""
        from harness.cell import run_cell

        done = self.config.stash.setdefault(RESULTS, {})
        node = cell.node(self.config.rootpath)
        if node in done:
            return done[node]
        result = run_cell(cell, self.cache, self.config.getoption("--shelf-recompute"))
        result.node = node
        if node in self.config.stash.get(INCUMBENTS, set()):  # kept for its candidates
            done[node] = result
        return result

    def _against_incumbent(self, cell: Cell, result: CellRow, row: CellRow) -> list[str]:
        """Under [upgrade], the candidate's cell against its incumbent's; a candidate cell
        with no incumbent twin passes ungated, with a warning saying so."""
        if cell.incumbent is None:
            if cell.upgrade_from:
                row.warnings.append(
                    f"the suite has no {cell.upgrade_from} cell of the same dataset and "
                    "strategy, so [upgrade] did not gate it; declare one to compare"
                )
            return []
        try:
            with self._terminal():
                incumbent = self._run(cell.incumbent)
            gated = gate(
                row, arrays(result.items), incumbent, arrays(incumbent.items), cell,
                cell.upgrade_max_drop, cell.incumbent.id,
            )  # fmt: skip
        except ShelfbenchError as exc:
            return [f"cannot compare with the incumbent {cell.incumbent.id}: {exc}"]
        row.upgrade, row.changed = gated.comparisons, gated.changed or row.changed
        worse = f"the upgrade from {cell.incumbent.backbone} is worse"
        return [f"{worse}: {c.line()}" for c in gated.comparisons if c.regression]

    def _against_baseline(self, cell: Cell, result: CellRow, row: CellRow) -> list[str]:
        """The cell against the --shelf-baseline run, where one is given."""
        baseline: Run | None = self.config.stash.get(BASELINE, None)
        if baseline is None:
            return []
        key = baseline.key(row)
        if key is None or key not in baseline.items:
            row.warnings.append(
                f"not in the baseline {baseline.path}, so not gated against it; "
                "add it with --shelf-update-baseline"
            )
            return []
        try:
            gated = gate(
                row, arrays(result.items), baseline.rows[key], baseline.items[key],
                cell, cell.gate.max_drop, f"{key} in {baseline.path}",
            )  # fmt: skip
        except BaselineError as exc:
            return [str(exc)]
        row.baseline, row.changed = gated.comparisons, gated.changed or row.changed
        worse = f"regression against {baseline.path}"
        return [f"{worse}: {c.line()}" for c in gated.comparisons if c.regression]

    @contextlib.contextmanager
    def _terminal(self) -> Iterator[None]:
        """Let progress bars reach the terminal through pytest's output capture."""
        capman = self.config.pluginmanager.getplugin("capturemanager")
        if capman is None or os.environ.get("PYTEST_XDIST_WORKER"):
            yield
            return
        with capman.global_and_fixture_disabled():
            yield


def arrays(items: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in items.items()}
