"""One exception type per layer; each message tells the user what to do next."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def one_line(text: str, limit: int = 400) -> str:
    """A message another library spread over several lines (gRPC's, MLflow's), on one."""
    return " ".join(text.split())[:limit]


class ShelfbenchError(Exception):
    """Base class: the CLI and the pytest plugin print these as one line, not a traceback."""


class Unavailable(ShelfbenchError):
    """Data or weights are not on this machine; a cell that needs them is skipped."""


class DatasetError(ShelfbenchError):
    """A dataset is malformed or asked for wrongly."""


class DatasetUnavailable(DatasetError, Unavailable):
    """A dataset's files are not on this machine."""


class WeightsError(ShelfbenchError):
    """Weights are corrupt or do not fit their backbone."""


class WeightsUnavailable(WeightsError, Unavailable):
    """A backbone's weights are not on this machine."""


class EmbeddingError(ShelfbenchError):
    """A backbone could not embed a batch (e.g. an input size the model does not take)."""


class TrainingError(ShelfbenchError):
    """Fine-tuning failed: the loss diverged."""


class SuiteError(ShelfbenchError):
    """A suite file is invalid or names something that is not registered."""


class CacheError(ShelfbenchError):
    """The embedding cache is unreadable or inconsistent."""


class PathError(ShelfbenchError):
    """A path a user gave is not the kind of thing it must be (a file, a directory)."""


@contextlib.contextmanager
def blame(setting: str, error: type[ShelfbenchError] = ShelfbenchError) -> Iterator[None]:
    """Where shelfbench hands work to a library (a model factory, a checkpoint loader, an
    index engine), an exception of the library's own becomes ``error``: one line naming
    the setting that led there, the library's type and message (its traceback stays on
    ``__cause__``). shelfbench's own errors pass through as they are."""
    try:
        yield
    except ShelfbenchError:
        raise
    except Exception as exc:
        said = f"{setting}: {type(exc).__name__}: {one_line(str(exc))}"
        raise error(f"{said}{raised_at(exc)}") from exc


def raised_at(exc: BaseException) -> str:
    """`` (raised at FILE:LINE in FUNCTION)``: the innermost frame of ``exc``'s traceback
    that is not in an installed package, so that an error in a team's own code (a model
    factory) points into their file; "" where every frame is a library's."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "site-packages" not in f.filename and "/harness/" not in f.filename]
    if not own:
        return ""
    frame = own[-1]
    return f" (raised at {frame.filename}:{frame.lineno} in {frame.name})"
