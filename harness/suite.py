"""Suites: a TOML file declares datasets × backbones × strategies, a data profile, and floors.

Loading a suite validates every name against the registries and every value against its
declared kind and range (``harness.settings``), so a mistake fails at collection with
one line, and never imports torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from harness.backbones.base import BackboneSpec
from harness.backbones.declared import BackboneTable, declared_backbone
from harness.backbones.libraries import has_text, library
from harness.catalogue import BUILT_IN, Catalogue
from harness.datasets.base import DatasetSpec
from harness.datasets.formats import user_dataset
from harness.errors import ShelfbenchError, SuiteError
from harness.metrics import METRICS
from harness.settings import (
    Count,
    CropPct,
    Date,
    ImageSize,
    Name,
    Names,
    Resamples,
    Seed,
    Table,
    Tolerance,
    load,
)
from harness.strategies import STRATEGIES, StrategySpec, parse_strategy
from harness.suite_file import TABLES, SuiteMeta, read_suite


class Profile(Table):
    """How much data and at what resolution every cell of a suite runs."""

    n_train: Count | None = None  # a seeded sample of the train split; all of it if omitted
    n_test: Count | None = None
    image_size: ImageSize | None = None  # overrides the backbone's native size
    crop_pct: CropPct | None = None
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 32
    seed: Seed = 0
    bad_images: Literal["skip", "fail"] = "skip"  # what an unreadable image does to its cell
    precision: Literal["auto", "fp32", "bf16", "tf32"] = "auto"  # auto: bf16 where native


class Gate(Table):
    """How a suite judges change: bootstrap resamples (and seed) for intervals and paired
    comparisons, the drop tolerated even when significant (``max_drop``), and how close to
    the best a cheaper cell must be to be recommended (``epsilon``)."""

    resamples: Resamples = 1000
    seed: Seed = 0
    max_drop: Tolerance = 0.01
    epsilon: Tolerance = 0.01
    # A cell whose data or weights are not on the machine: skipped, failed, or (auto)
    # failed where the run gates (a baseline, an [upgrade], $CI) and skipped elsewhere.
    unavailable: Literal["auto", "skip", "fail"] = "auto"


class Upgrade(Table):
    """``[upgrade]``: each cell of the ``candidate`` backbone is compared, in the same run,
    with the ``incumbent``'s cell of the same dataset and strategy (paired bootstrap over
    the same test items), and fails when significantly worse by more than ``max_drop``
    (default: the suite's ``[gate] max_drop``) on its main or a floored metric."""

    incumbent: Name
    candidate: Name
    max_drop: Tolerance | None = None

    @model_validator(mode="after")
    def _two_backbones(self) -> Upgrade:
        if self.incumbent == self.candidate:
            raise ValueError(
                f"incumbent and candidate are both {self.incumbent!r}: a backbone compared "
                "with itself always passes; name the model in production and the new one"
            )
        return self


@dataclass(frozen=True)
class Floor:
    """A one-sided threshold (``value >= floor``) and the measurement it was derived from."""

    metric: str
    floor: float
    measured: float
    date: str
    machine: str
    precision: str = ""  # what the measurement ran at ("" where the suite does not say)


class CellGroup(Table):
    """One ``[[cells]]`` table: the product of its lists, in the ``profile`` it runs in;
    its ``[cells.strategy.NAME]`` tables override the suite's ``[strategy.NAME]`` for it."""

    datasets: Names
    backbones: Names
    strategies: Names
    profile: Name = "default"
    strategy: dict[str, dict[str, Any]] = Field(default_factory=dict)


class FloorSpec(Table):
    """A floor as written in the suite file: the threshold and the measurement behind it.
    Both lie in the metric's range (``Metric.low``..``high``), checked with the metric."""

    floor: float
    measured: float
    date: Date
    machine: Name
    # The precision the measurement ran at: a run at another one says so beside its number.
    precision: Literal["fp32", "bf16", "tf32"] | None = None


@dataclass(frozen=True)
class Cell:
    """One benchmark cell: a dataset, a backbone and a strategy under a suite's profile."""

    suite: str
    dataset: str
    backbone: str
    strategy: str
    profile: Profile
    params: dict[str, Any] = field(hash=False)
    gate: Gate = field(default_factory=Gate)
    floors: tuple[Floor, ...] = ()
    run_profile: str = "default"
    variant: str = ""  # e.g. the index setting of a knn cell: faiss:HNSW32,efSearch=64
    incumbent: Cell | None = field(default=None, compare=False, repr=False)  # [upgrade]
    upgrade_max_drop: float = 0.0
    upgrade_from: str = ""  # under [upgrade], a candidate cell's incumbent backbone
    file: str = ""  # the suite file that declares it
    # The datasets and backbones its names resolve through: its suite's.
    catalogue: Catalogue = field(default=BUILT_IN, compare=False, repr=False)

    @property
    def id(self) -> str:
        variant = f"@{self.variant}" if self.variant else ""
        return f"{self.dataset}/{self.backbone}/{self.strategy}{variant}"

    def node(self, root: Path) -> str:
        """pytest's node id of the cell, ``suites/a.toml::cat/bb/knn``: what tells two
        suites' same-named cells apart in reports, baselines and the history."""
        where = Path(os.path.relpath(self.file, root)).as_posix() if self.file else ""
        return f"{where}::{self.id}"

    @property
    def dataset_spec(self) -> DatasetSpec:
        return self.catalogue.dataset(self.dataset)

    @property
    def backbone_spec(self) -> BackboneSpec:
        return self.catalogue.backbone(self.backbone)

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    path: Path
    profile: Profile
    cells: tuple[Cell, ...]
    catalogue: Catalogue = BUILT_IN

    def cell(self, cell_id: str) -> Cell:
        for cell in self.cells:
            if cell.id == cell_id:
                return cell
        raise SuiteError(f"suite {self.name!r} ({self.path}) has no cell {cell_id!r}")


def load_suite(path: Path) -> Suite:
    raw = read_suite(path)
    unknown = sorted(set(raw) - TABLES)
    if unknown:
        raise SuiteError(f"{path}: unknown table [{unknown[0]}]; a suite has {sorted(TABLES)}")
    meta = load(SuiteMeta, raw.get("suite", {}), f"{path}: [suite]")
    profile = load(Profile, raw.get("profile", {}), f"{path}: [profile]")
    gate = load(Gate, raw.get("gate", {}), f"{path}: [gate]")
    for table_name in ("strategy", "floors", "datasets", "backbones"):
        if not isinstance(raw.get(table_name, {}), dict):
            raise SuiteError(f"{path}: [{table_name}] is a table")
    if not isinstance(raw.get("cells", []), list):
        raise SuiteError(f"{path}: cells are declared as [[cells]] tables")
    catalogue = declared(raw, Path(path))
    name = meta.name or Path(path).stem
    cells = [
        cell
        for number, table in enumerate(raw.get("cells", []), 1)
        for cell in group_cells(raw, table, number, Path(path), name, profile, gate, catalogue)
    ]
    by_id = {cell.id: cell for cell in cells}
    if len(by_id) != len(cells):
        raise SuiteError(f"{path}: a cell is declared twice")
    for cell_id, floors in raw.get("floors", {}).items():
        if cell_id not in by_id:
            raise SuiteError(f"{path}: floors for {cell_id!r}, which is not a cell of the suite")
        by_id[cell_id] = dataclasses.replace(
            by_id[cell_id],
            floors=parse_floors(by_id[cell_id], floors, f'{path}: [floors."{cell_id}"]'),
        )
    if "upgrade" in raw:
        upgrade = load(Upgrade, raw["upgrade"], f"{path}: [upgrade]")
        by_id = paired(by_id, upgrade, gate, path)
    return Suite(
        name, meta.version, Path(path), profile, tuple(by_id[c.id] for c in cells), catalogue
    )


def declared(raw: Mapping[str, Any], path: Path) -> Catalogue:
    """The suite's catalogue: its own ``[backbones.NAME]`` and ``[datasets.NAME]`` entries
    on top of the built-in and installed ones."""
    tables = {
        name: load(BackboneTable, table, f"{path}: [backbones.{name}]")
        for name, table in raw.get("backbones", {}).items()
    }
    try:
        backbones = {name: declared_backbone(name, table, path) for name, table in tables.items()}
        datasets = {
            dataset_name: user_dataset(dataset_name, table, path.parent)
            for dataset_name, table in raw.get("datasets", {}).items()
        }
        return Catalogue(datasets, backbones)
    except ShelfbenchError as exc:
        raise SuiteError(f"{path}: {exc}") from None


def group_cells(
    raw: Mapping[str, Any],
    table: Any,
    number: int,
    path: Path,
    suite: str,
    profile: Profile,
    gate: Gate,
    catalogue: Catalogue,
) -> list[Cell]:
    """The cells of the ``number``-th ``[[cells]]`` table, each with its parameters."""
    where = f"{path}: [[cells]] number {number}"
    group = load(CellGroup, table, where)
    for own_name in group.strategy:
        if own_name not in STRATEGIES:
            raise SuiteError(
                f"{where}: [cells.strategy.{own_name}] names no strategy; there are "
                f"{', '.join(STRATEGIES.names())}"
            )
    cells = []
    for dataset, backbone, strategy_name in itertools.product(
        group.datasets, group.backbones, group.strategies
    ):
        try:
            catalogue.dataset(dataset)
            spec = catalogue.backbone(backbone)
            strategy, tuning = parse_strategy(strategy_name)
            if tuning is not None and tuning.dataset:
                catalogue.dataset(tuning.dataset)
        except ShelfbenchError as exc:
            raise SuiteError(f"{path}: {exc}") from None
        if not library(spec).runs_model and (strategy.needs_text or strategy.tuning):
            raise SuiteError(
                f"{path}: {strategy_name} needs a model to run; {backbone} is precomputed "
                "vectors, which knn, linear and mlp judge"
            )
        if strategy.needs_text and not has_text(spec):
            raise SuiteError(
                f"{path}: {strategy_name} needs a text tower; {backbone} is "
                f"an image-only {spec.source} model"
            )
        sources = strategy_tables(raw.get("strategy", {}), group, strategy, where, path)
        for label, params in strategy.cells(*merged(strategy, sources)):
            cells.append(
                Cell(
                    suite,
                    dataset,
                    backbone,
                    strategy_name,
                    profile,
                    params,
                    gate,
                    (),
                    group.profile,
                    label,
                    file=str(path),
                    catalogue=catalogue,
                )
            )
    return cells


def strategy_tables(
    tables: Mapping[str, Any], group: CellGroup, strategy: StrategySpec, where: str, path: Path
) -> list[tuple[str, Any]]:
    """Where a cell's strategy parameters come from, weakest first: the table it inherits,
    the suite's ``[strategy.NAME]``, the group's ``[cells.strategy.NAME]``."""
    names = [strategy.inherits] if strategy.inherits else []
    sources = [(f"{path}: [strategy.{n}]", tables.get(n, {})) for n in [*names, strategy.name]]
    sources.append(
        (f"{where}: [cells.strategy.{strategy.name}]", group.strategy.get(strategy.name, {}))
    )
    return sources


def merged(strategy: StrategySpec, sources: list[tuple[str, Any]]) -> tuple[dict[str, Any], str]:
    """The strategy's parameters from ``sources`` (each checked alone, so an error names
    its table), and the table that set them last."""
    values: dict[str, Any] = {}
    last = sources[-1][0]
    for where, table in sources:
        strategy.params(table, where)
        if table:
            values.update(table)
            last = where
    return strategy.params(values, last), last


def parse_floors(cell: Cell, floors: Any, where: str) -> tuple[Floor, ...]:
    """A cell's ``[floors."ID"]`` table: one floor per metric its strategy reports, each
    recording its measurement, both in the metric's range."""
    if not isinstance(floors, dict):
        raise SuiteError(f"{where} is a table of metrics")
    known = parse_strategy(cell.strategy)[0].metrics
    parsed = []
    for metric, spec in floors.items():
        if metric not in known:
            raise SuiteError(
                f"{where}: no metric {metric!r}; {cell.strategy} reports {', '.join(known)}"
            )
        if not isinstance(spec, dict):
            raise SuiteError(
                f"{where} {metric} is a table {{ floor, measured, date, machine }}: a floor "
                "records its measurement"
            )
        absent = [key for key in ("floor", "measured", "date", "machine") if key not in spec]
        if absent:
            raise SuiteError(
                f"{where} {metric}: the key {absent[0]!r} is missing; a floor records its "
                "measurement: { floor, measured, date, machine }"
            )
        floor = load(FloorSpec, spec, f"{where} {metric}:")
        entry = METRICS.get(metric)
        for key in ("floor", "measured"):
            value = getattr(floor, key)
            if not entry.low <= value <= entry.high:
                raise SuiteError(
                    f"{where} {metric}: {key} = {value}: must be a number in "
                    f"[{entry.low:g}, {entry.high:g}], the range of {metric}"
                )
        parsed.append(Floor(metric, **{**floor.model_dump(), "precision": floor.precision or ""}))
    return tuple(parsed)


def paired(by_id: dict[str, Cell], upgrade: Upgrade, gate: Gate, path: Path) -> dict[str, Cell]:
    """The cells with each candidate cell given its incumbent: the cell of the incumbent
    backbone with the same dataset, strategy and variant. A candidate cell without one is
    marked (``upgrade_from``) so its row can say it was not gated."""
    for role in ("incumbent", "candidate"):
        if not any(c.backbone == getattr(upgrade, role) for c in by_id.values()):
            raise SuiteError(
                f"{path}: [upgrade] {role} = {getattr(upgrade, role)!r} is the backbone of "
                "no cell of the suite"
            )
    max_drop = gate.max_drop if upgrade.max_drop is None else upgrade.max_drop
    out = dict(by_id)
    for cell in by_id.values():
        if cell.backbone != upgrade.candidate:
            continue
        twin = dataclasses.replace(cell, backbone=upgrade.incumbent, incumbent=None)
        out[cell.id] = dataclasses.replace(
            cell,
            incumbent=by_id.get(twin.id),
            upgrade_max_drop=max_drop,
            upgrade_from=upgrade.incumbent,
        )
    if all(c.incumbent is None for c in out.values()):
        raise SuiteError(
            f"{path}: [upgrade] {upgrade.incumbent} and {upgrade.candidate} share no dataset "
            "and strategy; declare cells for both"
        )
    return out


def find_cell(cell_id: str, suites_dir: Path) -> Cell:
    """The cell ``cell_id`` in the one suite of ``suites_dir`` that declares it, or a
    report's node id, ``FILE::CELL``, in that file."""
    if "::" in cell_id:
        path, _, cell_id = cell_id.partition("::")
        return load_suite(Path(path)).cell(cell_id)
    suites = {p: load_suite(p) for p in sorted(suites_dir.glob("*.toml"))}
    found = [(p, s) for p, s in suites.items() if cell_id in {c.id for c in s.cells}]
    if not found:
        raise SuiteError(
            f"no suite in {suites_dir}/ declares cell {cell_id!r}; "
            "pass --suite FILE or --suites-dir DIR"
        )
    if len(found) > 1:
        files = ", ".join(str(p) for p, _ in found)
        raise SuiteError(
            f"{len(found)} suites declare cell {cell_id!r} ({files}); pass --suite FILE, "
            f"or FILE::{cell_id} as the report's node ids read"
        )
    return found[0][1].cell(cell_id)
