"""The faiss engine: any ``index_factory`` string (``HNSW32``, ``IVF1024,PQ32``,
``HNSW32,SQ8``) under inner product, trained on the gallery where it needs training;
search parameters through ``faiss.ParameterSpace``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from harness.errors import SuiteError
from harness.index import ENGINES, Engine, IndexSetting
from harness.settings import Count, Table


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


class FaissOptions(Table):
    """None: faiss runs in this process."""


ENGINES.add(
    Engine(
        "faiss",
        build_faiss,
        "faiss index_factory strings, inner product",
        FaissSearch,
        FaissBuild,
        FaissOptions,
        distributions=("faiss-cpu",),
    )
)
