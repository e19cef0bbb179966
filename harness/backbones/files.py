"""Weight files: what resolution found (``ResolvedWeights``) and how a file or a
directory of them is hashed. The model libraries and weight resolution both read this
module, which reads neither."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness.cache import keep
from harness.paths import cache_root

OPEN_CLIP_CONFIG = "open_clip_config.json"


@dataclass(frozen=True)
class ResolvedWeights:
    """A weight file or directory (None for random init), the hash that identifies the
    weights, and where they were found."""

    path: Path | None
    sha256: str
    origin: str


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered in the cache by (path, size, mtime) so that multi-GB
    weights are hashed once; a Hugging Face blob is named by its sha256 already."""
    real = path.resolve()
    if blob := hub_blob_sha256(real):
        return blob
    stat = real.stat()
    memo_path = cache_root() / "weights-sha256.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    stamp = [stat.st_size, stat.st_mtime_ns]
    entry = memo.get(str(real))
    if entry and entry[:2] == stamp:
        return entry[2]
    sha256 = hash_file(real)
    memo[str(real)] = [*stamp, sha256]
    keep(memo_path, lambda p: p.write_text(json.dumps(memo, indent=0)))
    return sha256


def hub_blob_sha256(path: Path) -> str:
    """The sha256 a Hugging Face cache blob is named by (its LFS object id); "" for any
    other file."""
    real = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", real.name) and real.parent.name == "blobs":
        return real.name
    return ""


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dir_sha256(directory: Path) -> str:
    """Hash of a weights directory: the sha256 of each file in it, by name."""
    parts = [f"{p.name}:{file_sha256(p)}" for p in sorted(directory.iterdir()) if p.is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
