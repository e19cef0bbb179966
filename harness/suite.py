"""Suites: a TOML file declares datasets × backbones × strategies, a data profile, and floors.

Loading a suite validates every name against the registries, so a typo fails at collection
with one line, and never imports torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness.backbones import BACKBONES
from harness.backbones.adapters import has_text
from harness.backbones.declared import (
    BackboneTable,
    declared_backbone,
    load_entry_points,
    register_backbone,
)
from harness.datasets import DATASETS
from harness.datasets.formats import register_user_dataset, user_dataset
from harness.errors import ShelfbenchError, SuiteError
from harness.extract import PRECISIONS
from harness.strategies import STRATEGIES, parse_strategy

TABLES = {
    "suite",
    "profile",
    "gate",
    "cells",
    "strategy",
    "floors",
    "datasets",
    "backbones",
    "upgrade",
}
T = TypeVar("T")


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
    precision: str = "auto"  # fp32 | bf16 | tf32 (CUDA) | auto: bf16 where it is native


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
class Upgrade:
    """``[upgrade]``: each cell of the ``candidate`` backbone is compared, in the same run,
    with the ``incumbent``'s cell of the same dataset and strategy (paired bootstrap over
    the same test items), and fails when significantly worse by more than ``max_drop``
    (default: the suite's ``[gate] max_drop``) on its main or a floored metric."""

    incumbent: str
    candidate: str
    max_drop: float | None = None


@dataclass(frozen=True)
class Floor:
    """A one-sided threshold (``value >= floor``) and the measurement it was derived from."""

    metric: str
    floor: float
    measured: float
    date: str
    machine: str


@dataclass(frozen=True)
class CellGroup:
    """One ``[[cells]]`` table: the product of its lists, in the ``profile`` it runs in;
    its ``[cells.strategy.NAME]`` tables override the suite's ``[strategy.NAME]`` for it."""

    datasets: list[str]
    backbones: list[str]
    strategies: list[str]
    profile: str = "default"
    strategy: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FloorSpec:
    """A floor as written in the suite file: the threshold and the measurement behind it."""

    floor: float
    measured: float
    date: str
    machine: str


def _fits(value: Any, kind: Any) -> bool:
    """Whether a TOML value has the type ``kind`` (an int is a float; a bool is neither)."""
    if isinstance(kind, types.UnionType):
        return any(_fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind: Any) -> str:
    if isinstance(kind, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind) if k is not type(None))
    if typing.get_origin(kind) is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    return {int: "a whole number", float: "a number", str: "a string"}.get(kind, str(kind))


def typed(cls: type[T], table: Any, where: str) -> T:
    """``cls(**table)`` once every key of the TOML ``table`` is known to ``cls`` and of its
    field's type, and every field without a default is given; else one line naming it."""
    hints = typing.get_type_hints(cls)
    if not isinstance(table, dict):
        raise SuiteError(f"{where} is a table of {sorted(hints)}, not {table!r}")
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise SuiteError(f"{where}: unknown key {unknown[0]!r}; it takes {sorted(hints)}")
    missing = dataclasses.MISSING
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    required = [f.name for f in fields if f.default is missing and f.default_factory is missing]
    for key in required:
        if key not in table:
            raise SuiteError(f"{where}: the key {key!r} is missing")
    for key, value in table.items():
        if not _fits(value, hints[key]):
            raise SuiteError(f"{where}: {key} = {value!r} is not {_type_name(hints[key])}")
    return cls(**table)


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
    variant: str = ""  # e.g. the index setting of a knn cell: faiss:HNSW32,efSearch=64
    incumbent: Cell | None = field(default=None, compare=False, repr=False)  # [upgrade]
    upgrade_max_drop: float = 0.0

    @property
    def id(self) -> str:
        variant = f"@{self.variant}" if self.variant else ""
        return f"{self.dataset}/{self.backbone}/{self.strategy}{variant}"

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
    unknown = sorted(set(raw) - TABLES)
    if unknown:
        raise SuiteError(f"{path}: unknown table [{unknown[0]}]; a suite has {sorted(TABLES)}")
    meta = raw.get("suite", {})
    name = meta.get("name", Path(path).stem)
    profile = typed(Profile, raw.get("profile", {}), f"{path}: [profile]")
    gate = typed(Gate, raw.get("gate", {}), f"{path}: [gate]")
    if profile.precision not in PRECISIONS:
        raise SuiteError(f"{path}: [profile] precision is one of {', '.join(PRECISIONS)}")
    if profile.bad_images not in ("skip", "fail"):
        raise SuiteError(f"{path}: [profile] bad_images is 'skip' or 'fail'")
    for table_name in ("strategy", "floors", "datasets", "backbones"):
        if not isinstance(raw.get(table_name, {}), dict):
            raise SuiteError(f"{path}: [{table_name}] is a table")
    load_entry_points()
    for backbone_name, table in raw.get("backbones", {}).items():
        try:
            declared = typed(BackboneTable, table, f"[backbones.{backbone_name}]")
            register_backbone(declared_backbone(backbone_name, declared, Path(path).parent))
        except SuiteError as exc:
            raise SuiteError(f"{path}: {exc}") from None
    for dataset_name, table in raw.get("datasets", {}).items():
        try:
            register_user_dataset(user_dataset(dataset_name, table, Path(path).parent))
        except ShelfbenchError as exc:
            raise SuiteError(f"{path}: {exc}") from None

    tables = raw.get("strategy", {})
    cells: list[Cell] = []
    if not isinstance(raw.get("cells", []), list):
        raise SuiteError(f"{path}: cells are declared as [[cells]] tables")
    for number, table in enumerate(raw.get("cells", []), 1):
        group = typed(CellGroup, table, f"{path}: [[cells]] number {number}")
        for own_name in group.strategy:
            if own_name not in STRATEGIES:
                raise SuiteError(
                    f"{path}: [[cells]] number {number}: [cells.strategy.{own_name}] names no "
                    f"strategy; there are {', '.join(STRATEGIES.names())}"
                )
        product = itertools.product(group.datasets, group.backbones, group.strategies)
        for dataset, backbone, strategy_name in product:
            try:
                DATASETS.get(dataset)
                spec = BACKBONES.get(backbone)
                strategy, _ = parse_strategy(strategy_name)
                own = {**tables.get(strategy.name, {}), **group.strategy.get(strategy.name, {})}
                params = strategy.params({**tables.get(strategy.inherits, {}), **own})
                variants = strategy.cells(params)
            except ShelfbenchError as exc:
                raise SuiteError(f"{path}: {exc}") from None
            if strategy.needs_text and not has_text(spec):
                raise SuiteError(
                    f"{path}: {strategy_name} needs a text tower; {backbone} is "
                    f"an image-only {spec.source} model"
                )
            cells += [
                Cell(
                    name,
                    dataset,
                    backbone,
                    strategy_name,
                    profile,
                    variant_params,
                    gate,
                    (),
                    group.profile,
                    label,
                )
                for label, variant_params in variants
            ]

    by_id = {cell.id: cell for cell in cells}
    if len(by_id) != len(cells):
        raise SuiteError(f"{path}: a cell is declared twice")
    for cell_id, floors in raw.get("floors", {}).items():
        if cell_id not in by_id:
            raise SuiteError(f"{path}: floors for {cell_id!r}, which is not a cell of the suite")
        if not isinstance(floors, dict):
            raise SuiteError(f'{path}: [floors."{cell_id}"] is a table of metrics')
        cell = by_id[cell_id]
        known = parse_strategy(cell.strategy)[0].metrics
        parsed = []
        for metric, spec in floors.items():
            if metric not in known:
                raise SuiteError(
                    f"{path}: {cell_id}: no metric {metric!r}; "
                    f"{cell.strategy} reports {', '.join(known)}"
                )
            where = f'{path}: [floors."{cell_id}"] {metric} (a floor records its measurement)'
            if not isinstance(spec, dict):
                raise SuiteError(
                    f"{where} is a table {{ floor, measured, date, machine }}: a floor "
                    "records its measurement"
                )
            parsed.append(Floor(metric, **vars(typed(FloorSpec, spec, where))))
        by_id[cell_id] = dataclasses.replace(cell, floors=tuple(parsed))
    if "upgrade" in raw:
        upgrade = typed(Upgrade, raw["upgrade"], f"{path}: [upgrade]")
        by_id = paired(by_id, upgrade, gate, path)
    return Suite(
        name,
        int(meta.get("version", 1)),
        Path(path),
        profile,
        tuple(by_id[cell.id] for cell in cells),
    )


def paired(by_id: dict[str, Cell], upgrade: Upgrade, gate: Gate, path: Path) -> dict[str, Cell]:
    """The cells with each candidate cell given its incumbent: the cell of the incumbent
    backbone with the same dataset, strategy and variant."""
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
        if twin.id in by_id:
            out[cell.id] = dataclasses.replace(
                cell, incumbent=by_id[twin.id], upgrade_max_drop=max_drop
            )
    if all(c.incumbent is None for c in out.values()):
        raise SuiteError(
            f"{path}: [upgrade] {upgrade.incumbent} and {upgrade.candidate} share no dataset "
            "and strategy; declare cells for both"
        )
    return out


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
