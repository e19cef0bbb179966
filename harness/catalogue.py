"""A suite's catalogue: the datasets and backbones its cells can name. A suite's own
``[datasets.NAME]`` and ``[backbones.NAME]`` entries sit on top of those installed
packages offer (the ``shelfbench.backbones`` entry points) and the built-in registries,
so two suites in one run may each declare a ``catalogue`` of their own; every cell
resolves its names through its suite's catalogue, never through a process-global one.
(lm-evaluation-harness's ``TaskManager`` scopes tasks to an instance the same way.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.backbones import BACKBONES, BackboneSpec
from harness.backbones.declared import entry_point_backbones
from harness.datasets import DATASETS, DatasetSpec
from harness.errors import DatasetError, SuiteError, WeightsError


@dataclass(frozen=True, eq=False)
class Catalogue:
    """The suite's own entries by name (the built-in and installed ones are looked up
    behind them); a suite may not give a built-in or installed name another meaning."""

    datasets: Mapping[str, DatasetSpec] = field(default_factory=dict)
    backbones: Mapping[str, BackboneSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, dataset in self.datasets.items():
            if name in DATASETS and DATASETS.get(name) != dataset:
                raise DatasetError(
                    f"dataset {name!r} is a built-in dataset; give the suite's another name"
                )
        for name, backbone in self.backbones.items():
            known = entry_point_backbones().get(name) or (
                BACKBONES.get(name) if name in BACKBONES else None
            )
            if known is not None and known != backbone:
                raise SuiteError(
                    f"backbone {name!r} shadows a registered one; give the suite's another name"
                )

    def dataset(self, name: str) -> DatasetSpec:
        if name in self.datasets:
            return self.datasets[name]
        if name in DATASETS:
            return DATASETS.get(name)
        known = ", ".join(sorted({*DATASETS.names(), *self.datasets}))
        raise DatasetError(f"unknown dataset {name!r}; registered: {known}")

    def backbone(self, name: str) -> BackboneSpec:
        if name in self.backbones:
            return self.backbones[name]
        installed = entry_point_backbones()
        if name in installed:
            return installed[name]
        if name in BACKBONES:
            return BACKBONES.get(name)
        known = ", ".join(sorted({*BACKBONES.names(), *installed, *self.backbones}))
        raise WeightsError(f"unknown backbone {name!r}; registered: {known}")

    def all_datasets(self) -> list[DatasetSpec]:
        """Every dataset a cell can name, sorted by name."""
        found = {spec.name: spec for spec in DATASETS} | dict(self.datasets)
        return [found[name] for name in sorted(found)]

    def all_backbones(self) -> list[BackboneSpec]:
        """Every backbone a cell can name, sorted by name."""
        found = {spec.name: spec for spec in BACKBONES}
        found |= entry_point_backbones() | dict(self.backbones)
        return [found[name] for name in sorted(found)]


BUILT_IN = Catalogue()
