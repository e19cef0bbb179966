"""A registry is named entries of one kind, each added by the module that defines it
(after timm's ``_registry.py``)."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


class Registry(Generic[T]):
    """Named entries of one kind (datasets, backbones, strategies). Its package adds the
    built-in entries at import and then freezes it: a suite declares its own entries in
    its catalogue (``harness.catalogue``), and a test adds one with ``extended``."""

    def __init__(self, kind: str, error: type[Exception]) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T] = {}
        self._frozen = False

    def add(self, entry: T) -> T:
        if self._frozen:
            raise RuntimeError(
                f"the {self.kind} registry is frozen once its package is imported: declare "
                f"the {self.kind} {entry.name!r} in a suite file, or add it for a while with "
                "Registry.extended"
            )
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry
        return entry

    def freeze(self) -> None:
        """No entry is added from now on (but through ``extended``)."""
        self._frozen = True

    @contextlib.contextmanager
    def extended(self, *entries: T) -> Iterator[None]:
        """The registry with ``entries`` in it until the block ends, each in place of the
        entry of its name if there is one (tests, benchmarks)."""
        before = dict(self._entries)
        self._entries.update((entry.name, entry) for entry in entries)
        try:
            yield
        finally:
            self._entries = before

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise self._error(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def names(self) -> list[str]:
        """The names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def in_order(self) -> list[T]:
        """The entries in the order they were registered."""
        return list(self._entries.values())

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries[n] for n in sorted(self._entries))


def import_modules(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (its ``__name__`` and ``__path__``): each adds
    its own entries to a registry, so a new entry is one new file there."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
