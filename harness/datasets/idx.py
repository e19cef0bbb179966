"""Reader for the idx format of MNIST-style files (optionally gzipped)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from harness.errors import DatasetError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> tuple[np.ndarray, str]:
    """The array in an idx file and the sha256 of its decompressed bytes.

    Layout: two zero bytes, a dtype code, the number of dimensions, one big-endian
    uint32 per dimension, then the data in C order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc}); delete it and get it again") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _DTYPES:
        raise DatasetError(f"{path}: not an idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])  # type: ignore[call-overload]
    if len(raw) != header + dtype.itemsize * int(np.prod(shape)):
        raise DatasetError(f"{path}: truncated idx file (shape {shape}, {len(raw)} bytes)")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data, hashlib.sha256(raw).hexdigest()
