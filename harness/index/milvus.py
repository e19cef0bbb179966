"""The Milvus engine: a collection of the gallery with a ``spec`` index (``HNSW``,
``IVF_FLAT``, ...) under metric IP, in milvus-lite (a local store) or on a Milvus server
(``options.uri``). pymilvus is imported only when an index is built."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from harness.errors import SuiteError, Unavailable, one_line
from harness.index import ENGINES, Engine, IndexSetting
from harness.ownership import check_milvus_store
from harness.settings import Count, Table


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
    ...) under metric IP: in milvus-lite at ``options.uri`` (a local path; by default a
    temporary one), or on the Milvus server that URI names."""
    try:
        from pymilvus import DataType, MilvusClient
    except ImportError:
        raise Unavailable(
            "a milvus index needs pymilvus and milvus-lite: pip install 'shelfbench[milvus]'"
        ) from None
    uri = setting.options.get("uri") or ""
    if (not uri or uri.endswith(".db")) and setting.spec not in LITE_INDEX_TYPES:
        raise SuiteError(
            f"index 'milvus:{setting.spec}': milvus-lite builds only "
            f"{', '.join(LITE_INDEX_TYPES)} (others it would search exhaustively, without "
            "saying so); give options.uri a Milvus server for other index types"
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
            params=dict(setting.build),
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


class MilvusOptions(Table):
    """Where Milvus runs: ``uri``, a local milvus-lite store (a path; default a temporary
    one) or a server (``http://host:19530``)."""

    uri: str = ""


def _check(options: dict[str, Any], where: str) -> None:
    check_milvus_store(options["uri"], f"{where} options.uri")


ENGINES.add(
    Engine(
        "milvus",
        build_milvus,
        "Milvus (milvus-lite or a server by URI), IP",
        MilvusSearch,
        MilvusBuild,
        MilvusOptions,
        _check,
        distributions=("pymilvus", "milvus-lite"),
    )
)
