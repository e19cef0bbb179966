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

import itertools
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from harness.errors import SuiteError, Unavailable
from harness.registry import Registry
from harness.search import l2_normalise

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

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, gallery indices) per query; -1 where it found fewer."""
        ...

    def close(self) -> None:
        """Release what the index holds (a Milvus collection, its scratch file)."""
        ...


@dataclass(frozen=True)
class Engine:
    name: str
    build: Callable[[np.ndarray, IndexSetting], Built] = field(repr=False)
    description: str


ENGINES: Registry[Engine] = Registry("index engine", SuiteError)


def settings(params: Mapping[str, Any]) -> list[IndexSetting | None]:
    """The index settings a ``knn`` cell's parameters ask for: None for exact search; a
    list in ``index`` or in any ``search`` value gives one setting per combination."""
    indexes = params.get("index") or "exact"
    indexes = indexes if isinstance(indexes, list) else [indexes]
    search = params.get("search") or {}
    if not isinstance(search, dict):
        raise SuiteError(f"search = {search!r} is a table such as {{ efSearch = 64 }}")
    names = list(search)
    values = [v if isinstance(v, list) else [v] for v in search.values()]
    out: list[IndexSetting | None] = []
    for text in indexes:
        if not isinstance(text, str):
            raise SuiteError(f"index = {text!r} is a string such as 'faiss:HNSW32' or 'exact'")
        if text == "exact":
            out.append(None)
            continue
        engine, colon, spec = text.partition(":")
        if not colon or not spec:
            raise SuiteError(
                f"index = {text!r} names an engine and an index: 'faiss:HNSW32', "
                "'faiss:IVF1024,PQ32', 'milvus:HNSW' or 'exact'"
            )
        ENGINES.get(engine)
        options = {"milvus_uri": params.get("milvus_uri") or "", "build": params.get("build")}
        for combination in itertools.product(*values):
            chosen = dict(zip(names, combination, strict=True))
            out.append(IndexSetting(engine, spec, chosen, options))
    return out


def variants(params: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One knn cell per index setting: (its label, or "" for exact search; the parameters
    with that one setting)."""
    out = []
    for setting in settings(params):
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


class Searcher:
    """A ranker with ``search.rank``'s signature that builds ``setting``'s index over the
    gallery and searches it, recording what that cost in ``cost``."""

    def __init__(self, setting: IndexSetting) -> None:
        self.setting = setting
        self.cost: dict[str, Any] = {}

    def __call__(
        self, queries: np.ndarray, gallery: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        queries, gallery = l2_normalise(queries), l2_normalise(gallery)
        k = min(k, len(gallery))
        start = time.perf_counter()
        built = ENGINES.get(self.setting.engine).build(gallery, self.setting)
        built_at = time.perf_counter()
        try:
            scores, indices = built.search(queries, k)
            searched = time.perf_counter() - built_at
            sample = queries[: min(LATENCY_QUERIES, len(queries))]
            latencies = []
            for row in range(len(sample)):
                one = time.perf_counter()
                built.search(sample[row : row + 1], k)
                latencies.append(1000 * (time.perf_counter() - one))
        finally:
            built.close()
        self.cost = {
            "build_seconds": built_at - start,
            "memory_bytes": built.memory_bytes,
            "query_ms_p50": float(np.percentile(latencies, 50)) if latencies else None,
            "query_ms_p99": float(np.percentile(latencies, 99)) if latencies else None,
            "qps": len(queries) / searched if searched > 0 else None,
        }
        return scores, indices


@dataclass
class FaissIndex:
    index: Any
    memory_bytes: int | None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)

    def close(self) -> None:
        self.index = None


def build_faiss(gallery: np.ndarray, setting: IndexSetting) -> FaissIndex:
    """``faiss.index_factory(d, spec, METRIC_INNER_PRODUCT)``, trained on the gallery when
    it needs training, with ``search`` set through ``faiss.ParameterSpace`` (efSearch,
    nprobe, ... whatever the index wraps)."""
    import faiss

    from harness.extract import cpu_threads

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
    space = faiss.ParameterSpace()
    for name, value in setting.search.items():
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:
            raise SuiteError(f"{where} has no search parameter {name!r}") from None
    return FaissIndex(index, int(faiss.serialize_index(index).size))


def _faiss_reason(exc: RuntimeError) -> str:
    """The message of a faiss C++ exception, without its source location."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    return (errors or lines or ["no message"])[-1]


ENGINES.add(Engine("faiss", build_faiss, "faiss index_factory strings, inner product"))


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
            hits = self.client.search(
                self.collection,
                data=list(queries[start : start + MILVUS_BATCH]),
                limit=k,
                anns_field="vector",
                search_params={"metric_type": "IP", "params": self.search_params},
                output_fields=[],
            )
            for row, found in enumerate(hits, start):
                # equal scores by ascending gallery index, as exact search orders them
                pairs = sorted((-hit["distance"], hit["id"]) for hit in found)
                scores[row, : len(pairs)] = [-s for s, _ in pairs]
                indices[row, : len(pairs)] = [i for _, i in pairs]
        return scores, indices

    def close(self) -> None:
        self.client.drop_collection(self.collection)
        self.client.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


MILVUS_BATCH = 1000


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
    scratch = None
    if not uri:
        scratch = Path(tempfile.mkdtemp(prefix="shelfbench-milvus-"))
        uri = str(scratch / "gallery.db")
    client = MilvusClient(uri=uri)
    collection = "shelfbench_gallery"
    if client.has_collection(collection):
        client.drop_collection(collection)
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
    try:
        client.create_collection(collection, schema=schema, index_params=index_params)
        for start in range(0, len(gallery), MILVUS_BATCH):
            rows = gallery[start : start + MILVUS_BATCH]
            client.insert(collection, [{"id": start + i, "vector": v} for i, v in enumerate(rows)])
        client.flush(collection)
        client.load_collection(collection)
    except Exception as exc:  # pymilvus raises MilvusException and plain errors alike
        MilvusIndex(client, collection, {}, scratch).close()
        raise SuiteError(f"index 'milvus:{setting.spec}' at {uri}: {exc}") from None
    return MilvusIndex(client, collection, dict(setting.search), scratch)


ENGINES.add(Engine("milvus", build_milvus, "Milvus (milvus-lite or a server by URI), IP"))
