"""Library versions, git commit and host: what every cache key and result row carries."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path

from harness import __version__

# Distributions whose versions change embeddings or metrics. Read from package metadata,
# so asking costs no import of torch.
LIBRARIES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "open_clip": "open_clip_torch",
    "numpy": "numpy",
    "scikit_learn": "scikit-learn",
    "pillow": "pillow",
}


@cache
def version(distribution: str) -> str | None:
    """An installed distribution's version (None if it is not installed)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions(distributions: Iterable[str]) -> dict[str, str | None]:
    """Each distribution's installed version (None where it is not installed)."""
    return {name: version(name) for name in sorted(set(distributions))}


@cache
def library_versions() -> dict[str, str | None]:
    return {key: version(dist) for key, dist in LIBRARIES.items()}


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_provenance(root: Path) -> dict[str, object]:
    """What a run was: shelfbench's version (and commit, from a checkout), the project it
    ran in (pytest's rootdir, usually the team's repository) and that project's commit."""
    return {
        "harness": __version__,
        "harness_git_commit": git_commit(Path(__file__).parent),
        "python": platform.python_version(),
        **library_versions(),
        "project": str(root),
        "git_commit": git_commit(root),
        "host": platform.node(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
