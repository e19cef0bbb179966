"""Progress bars on stderr for long work: images embedded, passes over the data, epochs."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(desc: str, unit: str, total: int | None = None, *, quiet_for: float = 0) -> tqdm:
    """A bar on stderr, redrawn every 0.5 s on a terminal and every 15 s elsewhere (a log
    keeps a line per redraw); with ``quiet_for``, shown only once the work has run that
    many seconds, and cleared when it ends."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        delay=quiet_for,
        mininterval=0.5 if sys.stderr.isatty() else 15,
        leave=not quiet_for,
        dynamic_ncols=True,
    )
