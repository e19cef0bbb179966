"""Precomputed vectors (``vectors = "table.parquet"``): no model to build or train; the
table is read by ``harness.vectors`` and judged by strategies on embeddings only."""

from __future__ import annotations

from harness.backbones.libraries import LIBRARIES, Library

LIBRARIES.add(Library("vectors", None, pooling="precomputed", runs_model=False))
