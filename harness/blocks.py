"""The blocks a report document is made of (``harness.document`` builds them; Markdown,
HTML and the terminal render them). Text is plain strings with inline ``Code`` (cell ids)
and ``Strong`` parts: no block holds markup, so no user string can become markup."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.row import CellRow

if TYPE_CHECKING:
    from harness.history import Point


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Strong:
    text: str


Inline = str | Code | Strong
Line = Sequence[Inline]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    line: Line


@dataclass(frozen=True)
class Bullets:
    items: Sequence[Line]


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Plot:
    """A picture only HTML shows: ``kind`` names the plot (``harness.report_html.PLOTS``),
    drawn from ``rows`` for ``subject`` (a strategy or a dataset)."""

    kind: str
    subject: str
    rows: list[CellRow] = field(compare=False)
    section: Callable[[CellRow], str] = field(default=lambda row: row.dataset, compare=False)


@dataclass(frozen=True)
class Gallery:
    """A retrieval cell's queries and neighbours as thumbnails (HTML only)."""

    row: CellRow = field(compare=False)


@dataclass(frozen=True)
class History:
    """One cell's main metric across runs (``harness.history.Point``s, oldest first)."""

    cell: str
    points: list[Point] = field(compare=False)


@dataclass(frozen=True)
class Folded:
    """Blocks a reader opens when wanted (HTML: a ``<details>``; Markdown: a section)."""

    title: str
    blocks: Sequence[Heading | Paragraph | Bullets | Table]


Block = Heading | Paragraph | Bullets | Table | Plot | Gallery | History | Folded
