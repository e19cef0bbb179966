"""Suites: a TOML file declares datasets × backbones × strategies, a data profile, and floors.

Loading a suite validates every name against the registries, so a typo fails at collection
with one line, and never imports torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backbones import BACKBONES
from harness.datasets import DATASETS
from harness.datasets.formats import register_user_dataset, user_dataset
from harness.errors import ShelfbenchError, SuiteError
from harness.strategies import parse_strategy

FLOOR_FIELDS = {"floor", "measured", "date", "machine"}


@dataclass(frozen=True)
class Profile:
    """How much data and at what resolution every cell of a suite runs."""

    n_train: int | None = None
    n_test: int | None = None
    image_size: int | None = None
    crop_pct: float | None = None
    batch_size: int = 32
    seed: int = 0
    bad_images: str = "skip"  # or "fail": what an unreadable image does to its cell


@dataclass(frozen=True)
class Gate:
    """How a suite judges change: bootstrap resamples (and seed) for intervals and paired
    comparisons, the drop tolerated even when significant (``max_drop``), and how close to
    the best a cheaper cell must be to be recommended (``epsilon``)."""

    resamples: int = 1000
    seed: int = 0
    max_drop: float = 0.01
    epsilon: float = 0.01


@dataclass(frozen=True)
class Floor:
    """A one-sided threshold (``value >= floor``) and the measurement it was derived from."""

    metric: str
    floor: float
    measured: float
    date: str
    machine: str


@dataclass(frozen=True)
class Cell:
    """One benchmark cell: a dataset, a backbone and a strategy under a suite's profile."""

    suite: str
    dataset: str
    backbone: str
    strategy: str
    profile: Profile
    params: dict[str, Any] = field(hash=False)
    gate: Gate = Gate()
    floors: tuple[Floor, ...] = ()
    run_profile: str = "default"

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.backbone}/{self.strategy}"

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    path: Path
    profile: Profile
    cells: tuple[Cell, ...]

    def cell(self, cell_id: str) -> Cell:
        for cell in self.cells:
            if cell.id == cell_id:
                return cell
        raise SuiteError(f"suite {self.name!r} ({self.path}) has no cell {cell_id!r}")


def load_suite(path: Path) -> Suite:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SuiteError(f"{path}: {exc}") from None
    meta = raw.get("suite", {})
    name = meta.get("name", Path(path).stem)
    try:
        profile = Profile(**raw.get("profile", {}))
        gate = Gate(**raw.get("gate", {}))
    except TypeError as exc:
        raise SuiteError(f"{path}: [profile] or [gate]: {exc}") from None
    if profile.bad_images not in ("skip", "fail"):
        raise SuiteError(f"{path}: [profile] bad_images is 'skip' or 'fail'")
    for dataset_name, table in raw.get("datasets", {}).items():
        try:
            register_user_dataset(user_dataset(dataset_name, table, Path(path).parent))
        except ShelfbenchError as exc:
            raise SuiteError(f"{path}: {exc}") from None

    tables = raw.get("strategy", {})
    cells: list[Cell] = []
    for group in raw.get("cells", []):
        run_profile = group.get("profile", "default")
        product = itertools.product(group["datasets"], group["backbones"], group["strategies"])
        for dataset, backbone, strategy_name in product:
            try:
                DATASETS.get(dataset)
                source = BACKBONES.get(backbone).source
                strategy, _ = parse_strategy(strategy_name)
                own = tables.get(strategy.name, {})
                params = strategy.params({**tables.get(strategy.inherits, {}), **own})
            except ShelfbenchError as exc:
                raise SuiteError(f"{path}: {exc}") from None
            if strategy.needs_text and source != "open_clip":
                raise SuiteError(
                    f"{path}: {strategy_name} needs a text tower; {backbone} is "
                    f"an image-only {source} model"
                )
            cells.append(
                Cell(name, dataset, backbone, strategy_name, profile, params, gate, (), run_profile)
            )

    by_id = {cell.id: cell for cell in cells}
    if len(by_id) != len(cells):
        raise SuiteError(f"{path}: a cell is declared twice")
    for cell_id, floors in raw.get("floors", {}).items():
        if cell_id not in by_id:
            raise SuiteError(f"{path}: floors for {cell_id!r}, which is not a cell of the suite")
        cell = by_id[cell_id]
        known = parse_strategy(cell.strategy)[0].metrics
        parsed = []
        for metric, spec in floors.items():
            if metric not in known:
                raise SuiteError(
                    f"{path}: {cell_id}: no metric {metric!r}; "
                    f"{cell.strategy} reports {', '.join(known)}"
                )
            if not isinstance(spec, dict) or set(spec) != FLOOR_FIELDS:
                raise SuiteError(
                    f"{path}: {cell_id}: {metric} needs exactly "
                    f"{sorted(FLOOR_FIELDS)}: a floor records its measurement"
                )
            parsed.append(Floor(metric, **spec))
        by_id[cell_id] = dataclasses.replace(cell, floors=tuple(parsed))
    return Suite(
        name,
        int(meta.get("version", 1)),
        Path(path),
        profile,
        tuple(by_id[cell.id] for cell in cells),
    )


def find_cell(cell_id: str, suites_dir: Path) -> Cell:
    """The cell ``cell_id`` in the one suite of ``suites_dir`` that declares it."""
    suites = [load_suite(p) for p in sorted(suites_dir.glob("*.toml"))]
    found = [s.cell(cell_id) for s in suites if cell_id in {c.id for c in s.cells}]
    if not found:
        raise SuiteError(
            f"no suite in {suites_dir}/ declares cell {cell_id!r}; "
            "pass --suite FILE or --suites-dir DIR"
        )
    if len(found) > 1:
        raise SuiteError(
            f"{len(found)} suites in {suites_dir}/ declare cell {cell_id!r}; pass --suite FILE"
        )
    return found[0]
