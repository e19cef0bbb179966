"""Approximate nearest-neighbour indexes, as product search deploys them: faiss
``index_factory`` strings (``faiss:HNSW32``, ``faiss:IVF1024,PQ32``) and Milvus
(``milvus:HNSW``: milvus-lite in a local file, or any Milvus server by URI).

A retrieval cell with an index ranks its gallery twice, exactly and through the index, and
reports the task metrics under the index, the exact ones, the neighbour recall and what
the index costs. Both engines search by inner product on L2-normalised vectors (cosine),
as exact search does. Engines are registry entries (``ENGINES``): one ``build`` function
each, imported only when a suite asks for it.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
from pydantic import Field

from harness.errors import SuiteError, Unavailable, blame, one_line
from harness.ownership import check_milvus_store
from harness.registry import Registry
from harness.search import l2_normalise
from harness.settings import Count, Table, load

# Queries timed one at a time for the latency percentiles.
LATENCY_QUERIES = 200


@dataclass(frozen=True)
class IndexSetting:
    """One index and one set of search parameters: ``engine:spec`` and ``search``."""

    engine: str
    spec: str
    search: dict[str, Any] = field(default_factory=dict, hash=False)
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        """``faiss:HNSW32,efSearch=64``: what a cell id and a report row show."""
        search = [f"{name}={value}" for name, value in self.search.items()]
        return ",".join([f"{self.engine}:{self.spec}", *search])


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
    """An index engine: how it builds an index over a gallery, and the keys (with their
    kinds and ranges) its ``search`` and ``build`` tables take."""

    name: str
    build: Callable[[np.ndarray, IndexSetting], Built] = field(repr=False)
    description: str
    search: type[Table] = field(repr=False)
    build_keys: type[Table] = field(repr=False)


ENGINES: Registry[Engine] = Registry("index engine", SuiteError)


def _choices(table: Any, name: str, where: str) -> tuple[list[str], list[list[Any]]]:
    """A ``search``/``build`` table's keys and, per key, its values (a list gives several)."""
    table = table or {}
    if not isinstance(table, Mapping):
        raise SuiteError(f"{where} {name} = {table!r}: must be a table such as {{ efSearch = 64 }}")
    values = [list(v) if isinstance(v, list | tuple) else [v] for v in table.values()]
    return list(table), values


def settings(params: Mapping[str, Any], where: str = "[strategy.knn]") -> list[IndexSetting | None]:
    """The index settings a ``knn`` cell's parameters ask for: None for exact search; a
    list in ``index`` or in any ``search`` value gives one setting per combination. Each
    search and build key is checked against the engine's declared kinds and ranges."""
    indexes = params.get("index") or "exact"
    indexes = list(indexes) if isinstance(indexes, list | tuple) else [indexes]
    names, values = _choices(params.get("search"), "search", where)
    out: list[IndexSetting | None] = []
    for text in indexes:
        if text == "exact":
            out.append(None)
            continue
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
        engine = ENGINES.get(engine_name)
        build = params.get("build") or {}
        load(engine.build_keys, build, f"{where} (index {text})", prefix="build.")
        options = {"milvus_uri": params.get("milvus_uri") or "", "build": build}
        if engine_name == "milvus":
            check_milvus_store(options["milvus_uri"], where)
        for combination in itertools.product(*values):
            chosen = dict(zip(names, combination, strict=True))
            load(engine.search, chosen, f"{where} (index {text})", prefix="search.")
            out.append(IndexSetting(engine_name, spec, chosen, options))
    return out


def variants(
    params: Mapping[str, Any], where: str = "[strategy.knn]"
) -> list[tuple[str, dict[str, Any]]]:
    """One knn cell per index setting: (its label, or "" for exact search; the parameters
    with that one setting)."""
    out = []
    for setting in settings(params, where):
        if setting is None:
            out.append(("", {**params, "index": None, "search": None}))
        else:
            index = f"{setting.engine}:{setting.spec}"
            out.append((setting.label, {**params, "index": index, "search": setting.search}))
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


@dataclass
class FaissIndex:
    index: Any
    spec: str
    memory_bytes: int | None

    def tune(self, search: dict[str, Any]) -> None:
        import faiss

        space = faiss.ParameterSpace()
        for name, value in search.items():
            try:
                space.set_index_parameter(self.index, name, value)
            except RuntimeError:
                raise SuiteError(
                    f"index 'faiss:{self.spec}' has no search parameter {name!r}"
                ) from None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)

    def close(self) -> None:
        self.index = None


def build_faiss(gallery: np.ndarray, setting: IndexSetting) -> FaissIndex:
    """``faiss.index_factory(d, spec, METRIC_INNER_PRODUCT)``, trained on the gallery when
    it needs training; ``tune`` sets search parameters through ``faiss.ParameterSpace``
    (efSearch, nprobe, ... whatever the index wraps)."""
    import faiss

    from harness.runtime import cpu_threads

    faiss.omp_set_num_threads(cpu_threads())
    where = f"index 'faiss:{setting.spec}'"
    try:
        index = faiss.index_factory(gallery.shape[1], setting.spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise SuiteError(f"{where}: faiss cannot build it ({_faiss_reason(exc)})") from None
    try:
        if not index.is_trained:
            index.train(gallery)
    except RuntimeError as exc:
        raise SuiteError(
            f"{where}: training on the {len(gallery)}-item gallery failed "
            f"({_faiss_reason(exc)}); use fewer lists or a larger gallery"
        ) from None
    index.add(gallery)
    return FaissIndex(index, setting.spec, int(faiss.serialize_index(index).size))


def _faiss_reason(exc: RuntimeError) -> str:
    """The message of a faiss C++ exception, without its source location."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    return (errors or lines or ["no message"])[-1]


class FaissSearch(Table):
    """faiss ``ParameterSpace`` names a suite may set (each applies where the index has it)."""

    efSearch: Count | None = None  # HNSW: candidates kept while searching
    nprobe: Count | None = None  # IVF: lists visited
    quantizer_efSearch: Count | None = None  # IVF over an HNSW coarse quantizer
    max_codes: Count | None = None  # IVF: codes scanned at most
    k_factor: Annotated[float, Field(ge=1)] | None = None  # a refine stage's re-ranking depth


class FaissBuild(Table):
    """None: a faiss index is built as its factory string says ("IVF1024,PQ32")."""


ENGINES.add(
    Engine(
        "faiss",
        build_faiss,
        "faiss index_factory strings, inner product",
        FaissSearch,
        FaissBuild,
    )
)


@dataclass
class MilvusIndex:
    client: Any
    collection: str
    search_params: dict[str, Any]
    scratch: Path | None
    memory_bytes: int | None = None  # a Milvus server's memory is not the client's to see

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        indices = np.full((len(queries), k), -1, dtype=np.int64)
        for start in range(0, len(queries), MILVUS_BATCH):
            try:
                hits = self.client.search(
                    self.collection,
                    data=list(queries[start : start + MILVUS_BATCH]),
                    limit=k,
                    anns_field="vector",
                    search_params={"metric_type": "IP", "params": self.search_params},
                    output_fields=["id"],  # [] would return every field, vectors included
                )
            except Exception as exc:  # as in build_milvus
                raise SuiteError(
                    f"searching the Milvus collection failed: {one_line(str(exc))}"
                ) from None
            for row, found in enumerate(hits, start):
                # equal scores by ascending gallery index, as exact search orders them
                pairs = sorted((-hit["distance"], hit["id"]) for hit in found)
                scores[row, : len(pairs)] = [-s for s, _ in pairs]
                indices[row, : len(pairs)] = [i for _, i in pairs]
        return scores, indices

    def tune(self, search: dict[str, Any]) -> None:
        self.search_params = dict(search)

    def close(self) -> None:
        self.client.drop_collection(self.collection)
        self.client.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


MILVUS_BATCH = 1000
# The index types milvus-lite 3.2 builds (milvus_lite/index/factory.py); it accepts any other
# name, logs an error from a background thread, and answers searches by brute force.
LITE_INDEX_TYPES = ("FLAT", "AUTOINDEX", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8")


def build_milvus(gallery: np.ndarray, setting: IndexSetting) -> MilvusIndex:
    """A Milvus collection of the gallery with a ``spec`` index (``HNSW``, ``IVF_FLAT``,
    ...) under metric IP: in milvus-lite at ``milvus_uri`` (a ``.db`` file; by default a
    temporary one), or on the Milvus server that URI names."""
    try:
        from pymilvus import DataType, MilvusClient
    except ImportError:
        raise Unavailable(
            "a milvus index needs pymilvus and milvus-lite: pip install 'shelfbench[milvus]'"
        ) from None
    uri = setting.options.get("milvus_uri") or ""
    if (not uri or uri.endswith(".db")) and setting.spec not in LITE_INDEX_TYPES:
        raise SuiteError(
            f"index 'milvus:{setting.spec}': milvus-lite builds only "
            f"{', '.join(LITE_INDEX_TYPES)} (others it would search exhaustively, without "
            "saying so); give milvus_uri a Milvus server for other index types"
        )
    scratch = None
    if not uri:
        scratch = Path(tempfile.mkdtemp(prefix="shelfbench-milvus-"))
        uri = str(scratch / "gallery.db")
    collection = f"shelfbench_{uuid.uuid4().hex[:16]}"  # a shared server may hold others
    client = None
    try:
        client = MilvusClient(uri=uri)
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=gallery.shape[1])
        index_params = client.prepare_index_params()
        index_params.add_index(
            field_name="vector",
            index_type=setting.spec,
            metric_type="IP",
            params=dict(setting.options.get("build") or {}),
        )
        client.create_collection(collection, schema=schema, index_params=index_params)
        for start in range(0, len(gallery), MILVUS_BATCH):
            rows = gallery[start : start + MILVUS_BATCH]
            client.insert(collection, [{"id": start + i, "vector": v} for i, v in enumerate(rows)])
        client.flush(collection)
        client.load_collection(collection)
    except Exception as exc:  # pymilvus raises MilvusException and plain errors alike
        if client is not None:
            with contextlib.suppress(Exception):
                MilvusIndex(client, collection, {}, None).close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise SuiteError(f"index 'milvus:{setting.spec}' at {uri}: {one_line(str(exc))}") from None
    return MilvusIndex(client, collection, {}, scratch)


class MilvusSearch(Table):
    """Milvus search parameters."""

    ef: Count | None = None  # HNSW: candidates kept while searching
    nprobe: Annotated[int, Field(ge=1, le=65536)] | None = None  # IVF: lists visited


class MilvusBuild(Table):
    """Milvus index build parameters (those of the index type the spec names)."""

    M: Annotated[int, Field(ge=2, le=2048)] | None = None  # HNSW: links per node
    efConstruction: Count | None = None  # HNSW: candidates kept while building
    nlist: Annotated[int, Field(ge=1, le=65536)] | None = None  # IVF: lists
    m: Count | None = None  # IVF_PQ: sub-quantizers
    nbits: Annotated[int, Field(ge=1, le=24)] | None = None  # IVF_PQ: bits per code


ENGINES.add(
    Engine(
        "milvus",
        build_milvus,
        "Milvus (milvus-lite or a server by URI), IP",
        MilvusSearch,
        MilvusBuild,
    )
)
