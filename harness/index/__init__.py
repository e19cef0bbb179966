"""Approximate nearest-neighbour indexes, as product search deploys them: one module per
engine (``faiss``: ``index_factory`` strings such as ``faiss:HNSW32``; ``milvus``:
``milvus:HNSW`` in milvus-lite or on a server), each a registry entry (``ENGINES``) that
declares its ``search``, ``build`` and connection ``options`` keys with their kinds and
ranges. A new engine is one module and adds no key to ``knn``.

A retrieval cell with an index ranks its gallery twice, exactly and through the index, and
reports the task metrics under the index, the exact ones, the neighbour recall and what
the index costs. Every engine searches by inner product on L2-normalised vectors
(cosine), as exact search does.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from harness.errors import SuiteError, blame
from harness.registry import Registry, import_modules
from harness.search import l2_normalise
from harness.settings import Table, load

# Queries timed one at a time for the latency percentiles.
LATENCY_QUERIES = 200


@dataclass(frozen=True)
class IndexSetting:
    """One index: ``engine:spec``, its ``search`` and ``build`` parameters, its engine's
    connection ``options``, and the build keys a suite swept (they name the cell)."""

    engine: str
    spec: str
    search: dict[str, Any] = field(default_factory=dict, hash=False)
    build: dict[str, Any] = field(default_factory=dict, hash=False)
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    swept: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``faiss:HNSW32,efSearch=64``: what a cell id and a report row show."""
        built = [f"{name}={self.build[name]}" for name in self.swept]
        search = [f"{name}={value}" for name, value in self.search.items()]
        return ",".join([f"{self.engine}:{self.spec}", *built, *search])


class Built(Protocol):
    """An index holding a gallery, ready to search."""

    memory_bytes: int | None

    def tune(self, search: dict[str, Any]) -> None:
        """Set the search parameters (efSearch, nprobe, ef, ...) for what follows."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, gallery indices) per query; -1 where it found fewer."""
        ...

    def close(self) -> None:
        """Release what the index holds (a Milvus collection, its scratch file)."""
        ...


@dataclass(frozen=True)
class Engine:
    """An index engine: how it builds an index over a gallery, the keys (with their kinds
    and ranges) its ``search``, ``build`` and ``options`` tables take, and what it checks
    of its options before any cell runs."""

    name: str
    build: Callable[[np.ndarray, IndexSetting], Built] = field(repr=False)
    description: str
    search: type[Table] = field(repr=False)
    build_keys: type[Table] = field(repr=False)
    options: type[Table] = field(repr=False)
    check: Callable[[dict[str, Any], str], None] = field(default=lambda options, where: None)
    distributions: tuple[str, ...] = ()  # its packages: their versions key a cell's outcome


ENGINES: Registry[Engine] = Registry("index engine", SuiteError)


def _choices(table: Any, name: str, where: str) -> tuple[list[str], list[list[Any]]]:
    """A ``search``/``build`` table's keys and, per key, its values (a list gives several)."""
    table = table or {}
    if not isinstance(table, Mapping):
        raise SuiteError(f"{where} {name} = {table!r}: must be a table such as {{ efSearch = 64 }}")
    values = [list(v) if isinstance(v, list | tuple) else [v] for v in table.values()]
    return list(table), values


def engine_of(text: str, where: str) -> tuple[Engine, str]:
    """The engine and index spec ``text`` (``faiss:HNSW32``) names."""
    engine_name, colon, spec = text.partition(":")
    if not colon or not spec:
        raise SuiteError(
            f"{where} index = {text!r}: must name an engine and an index: 'faiss:HNSW32', "
            "'faiss:IVF1024,PQ32', 'milvus:HNSW' or 'exact'"
        )
    if engine_name not in ENGINES:
        raise SuiteError(
            f"{where} index = {text!r}: unknown index engine {engine_name!r}; "
            f"registered: {', '.join(ENGINES.names())}"
        )
    return ENGINES.get(engine_name), spec


def settings(params: Mapping[str, Any], where: str = "[strategy.knn]") -> list[IndexSetting | None]:
    """The index settings a ``knn`` cell's parameters ask for: None for exact search; a
    list in ``index``, or in any ``search`` or ``build`` value, gives one setting per
    combination. Each key is checked against the engine's declared kinds and ranges."""
    indexes = params.get("index") or "exact"
    indexes = list(indexes) if isinstance(indexes, list | tuple) else [indexes]
    names, values = _choices(params.get("search"), "search", where)
    build_names, build_values = _choices(params.get("build"), "build", where)
    swept = tuple(n for n, v in (params.get("build") or {}).items() if isinstance(v, list | tuple))
    out: list[IndexSetting | None] = []
    for text in indexes:
        if text == "exact":
            out.append(None)
            continue
        engine, spec = engine_of(text, where)
        at = f"{where} (index {text})"
        options = load(engine.options, params.get("options") or {}, at, "options.").model_dump()
        engine.check(options, where)
        for built in itertools.product(*build_values):
            build = dict(zip(build_names, built, strict=True))
            load(engine.build_keys, build, at, prefix="build.")
            for combination in itertools.product(*values):
                chosen = dict(zip(names, combination, strict=True))
                load(engine.search, chosen, at, prefix="search.")
                out.append(IndexSetting(engine.name, spec, chosen, build, options, swept))
    return out


def distributions(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The packages of the engines a knn cell's parameters search through (none for
    exact search)."""
    engines = {s.engine for s in settings(params) if s is not None}
    return tuple(d for name in sorted(engines) for d in ENGINES.get(name).distributions)


def variants(
    params: Mapping[str, Any], where: str = "[strategy.knn]"
) -> list[tuple[str, dict[str, Any]]]:
    """One knn cell per index setting: (its label, or "" for exact search; the parameters
    with that one setting)."""
    out = []
    for setting in settings(params, where):
        if setting is None:
            out.append(("", {**params, "index": None, "search": None, "build": None}))
        else:
            index = f"{setting.engine}:{setting.spec}"
            one = {"index": index, "search": setting.search, "build": setting.build}
            out.append((setting.label, {**params, **one}))
    return out


def neighbour_recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over queries of |index top-k ∩ exact top-k| / k (ANN benchmarks' recall)."""
    k = min(k, exact.shape[1])
    hits = [len(np.intersect1d(f[:k], e[:k])) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits) / k) if hits else float("nan")


def measure(built: Built, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Search all ``queries`` (L2-normalised) in one batch, then time the first
    ``LATENCY_QUERIES`` one at a time: the results, batched QPS and latency percentiles."""
    start = time.perf_counter()
    scores, indices = built.search(queries, k)
    searched = time.perf_counter() - start
    latencies = []
    for row in range(min(LATENCY_QUERIES, len(queries))):
        one = time.perf_counter()
        built.search(queries[row : row + 1], k)
        latencies.append(1000 * (time.perf_counter() - one))
    return (
        scores,
        indices,
        {
            "memory_bytes": built.memory_bytes,
            "query_ms_p50": float(np.percentile(latencies, 50)) if latencies else None,
            "query_ms_p99": float(np.percentile(latencies, 99)) if latencies else None,
            "qps": len(queries) / searched if searched > 0 else None,
        },
    )


def build(gallery: np.ndarray, setting: IndexSetting) -> tuple[Built, float]:
    """``setting``'s index over the L2-normalised ``gallery``, tuned to its search
    parameters, and the seconds it took to build."""
    start = time.perf_counter()
    with blame(f"index '{setting.engine}:{setting.spec}'", SuiteError):
        built = ENGINES.get(setting.engine).build(gallery, setting)
    seconds = time.perf_counter() - start
    try:
        with blame(f"index '{setting.engine}:{setting.spec}' search {setting.search}", SuiteError):
            built.tune(setting.search)
    except BaseException:
        built.close()
        raise
    return built, seconds


class Searcher:
    """A ranker with ``search.rank``'s signature that builds ``setting``'s index over the
    gallery and searches it, recording what that cost in ``cost``."""

    def __init__(self, setting: IndexSetting) -> None:
        self.setting = setting
        self.cost: dict[str, Any] = {}

    def __call__(
        self, queries: np.ndarray, gallery: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        built, seconds = build(l2_normalise(gallery), self.setting)
        try:
            with blame(f"searching index '{self.setting.label}'", SuiteError):
                scores, indices, cost = measure(built, l2_normalise(queries), min(k, len(gallery)))
        finally:
            built.close()
        self.cost = {"build_seconds": seconds, **cost}
        return scores, indices


# Each module of this package registers its engine (importing faiss or pymilvus only when
# it builds an index), so a new engine is one new module here.
import_modules(__name__, __path__)
ENGINES.freeze()
