"""The self-contained HTML report: the report document (``harness.document``) rendered as
HTML, with plots and gallery thumbnails embedded as base64 PNG (matplotlib, imported
only here).

Every text that reaches the page goes through ``esc`` here, in the renderer: names,
ids, class names, paths, warnings and messages come from users and are never markup.
"""

from __future__ import annotations

import base64
import functools
import html as escape
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.blocks import (
    Block,
    Bullets,
    Folded,
    Heading,
    History,
    Line,
    Paragraph,
    Plot,
    Table,
)
from harness.catalogue import BUILT_IN, Catalogue
from harness.datasets.base import Dataset
from harness.document import build, text
from harness.records import Shown
from harness.report import compute_seconds, pareto_front
from harness.row import CellRow

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}
p,li,summary{overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:13px;margin:1em 0;display:block;overflow-x:auto;
max-width:100%}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;background:#fff}
td:first-child,th:first-child{text-align:left;position:sticky;left:0;z-index:1}
img{max-width:100%}
details{margin:1em 0}summary{cursor:pointer;font-weight:600}
.row{display:flex;align-items:flex-end;gap:6px;margin:4px 0}
.row figure{margin:0;text-align:center;font-size:10px;width:76px;overflow-wrap:anywhere}
.thumb{border:3px solid;display:block;image-rendering:pixelated}
.note{width:150px;font-size:11px;align-self:center}
.pair{border-top:1px solid #ccc;padding:4px 0}"""


def label(text: Any) -> str:
    """A user's name as matplotlib shows it: ``$`` would start mathtext (and a malformed
    formula raises), so it is shown as itself."""
    return str(text).replace("$", r"\$")


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return (
        f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
    )


def _finish(figure: Any, ax: Any, xlabel: str, ylabel: str, title: str) -> str:
    """Label a plot, add its legend and grid, and embed it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(figure)


def heat_map(block: Plot) -> str:
    """Backbone × dataset accuracy of one strategy (``block.subject``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    strategy, section = block.subject, block.section
    cells = [r for r in block.rows if r.strategy == strategy and "accuracy" in r.metrics]
    backbones = sorted({r.backbone for r in cells})
    datasets = sorted({section(r) for r in cells})
    grid = np.full((len(backbones), len(datasets)), np.nan)
    for r in cells:
        grid[backbones.index(r.backbone), datasets.index(section(r))] = r.metrics["accuracy"]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(datasets), 0.8 + 0.45 * len(backbones)))
    # The colours span the values shown, so a difference of a point is visible.
    low, high = float(np.nanmin(grid)), float(np.nanmax(grid))
    low, high = (low - 0.01, high + 0.01) if high - low < 0.01 else (low, high)
    image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high, aspect="auto")
    ax.set_xticks(range(len(datasets)), [label(d) for d in datasets])
    ax.set_yticks(range(len(backbones)), [label(b) for b in backbones])
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(
                j,
                i,
                f"{value:.3f}",
                ha="center",
                va="center",
                color="white" if value < (low + high) / 2 else "black",
            )
    ax.set_title(label(f"{strategy}: accuracy"))
    fig.colorbar(image, ax=ax)
    return _png(fig)


def scatter(block: Plot) -> str:
    """Accuracy against compute seconds (log scale where they span more than 10x), the
    Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r for r in block.rows if "accuracy" in r.metrics]
    points = [(max(compute_seconds(r) or 0.0, 1e-3), r.metrics["accuracy"]) for r in cells]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy in sorted({r.strategy for r in cells}):
        mine = [p for p, r in zip(points, cells, strict=True) if r.strategy == strategy]
        xs, ys = zip(*mine, strict=True)
        ax.scatter(xs, ys, label=label(strategy), s=40)
    for point, row in zip(points, cells, strict=True):
        ax.annotate(
            label(row.backbone), point, fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
    ax.plot(*zip(*(points[i] for i in front), strict=True), "k--", lw=1, label="Pareto front")
    costs = [p[0] for p in points]
    if max(costs) > 10 * min(costs):  # a log axis only where costs span orders of magnitude
        ax.set_xscale("log")
    return _finish(
        fig,
        ax,
        "compute seconds (embed + train + eval)",
        "accuracy",
        label(f"{block.subject}: cost against quality"),
    )


def index_plot(block: Plot) -> str:
    """Neighbour recall@10 against batched queries per second, one series per backbone,
    with the Pareto front (more recall, more QPS) of each drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    indexed = [(r, r.index) for r in block.rows if r.index is not None and r.index.qps]
    for backbone in sorted({r.backbone for r, _ in indexed}):
        mine = [(r, index) for r, index in indexed if r.backbone == backbone]
        points = [(1 / (index.qps or 1), index.neighbour_recall[10]) for _, index in mine]
        shown = [(p[1], 1 / p[0]) for p in points]
        xs, ys = zip(*shown, strict=True)
        dots = ax.scatter(xs, ys, s=36, label=label(backbone))
        for point, (row, _) in zip(shown, mine, strict=True):
            name = label(row.id.partition("@")[2])
            ax.annotate(name, point, fontsize=7, xytext=(4, 3), textcoords="offset points")
        front = [shown[i] for i in pareto_front(points)]
        ax.plot(*zip(*front, strict=True), "--", lw=1, color=dots.get_facecolor()[0])
    ax.set_yscale("log")
    return _finish(
        fig,
        ax,
        "neighbour recall@10 (overlap with exact search's top 10)",
        "queries per second (batched)",
        label(f"{block.subject}: recall against speed (dashed: Pareto front)"),
    )


def esc(value: Any) -> str:
    """The one way text reaches the page: escaped, quotes included."""
    return escape.escape(str(value), quote=True)


def inline(line: Line) -> str:
    return text(line, lambda t: f"<code>{esc(t)}</code>", lambda t: f"<b>{esc(t)}</b>", esc)


def table(block: Table) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in block.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


PLOTS: dict[str, Callable[[Plot], str]] = {}


# Row fields no plot draws, which change from run to run (this run's seconds, the cache
# states, the verdicts) or are pictures of their own: left out of a plot's cache key.
NOT_PLOTTED = (
    *("seconds", "cache", "result_cache", "outcome", "message", "warnings"),
    *("baseline", "upgrade", "gallery", "changed", "items"),
)


def plot(block: Plot) -> str:
    """A plot as an embedded PNG, drawn once per content: a warm run whose plots show the
    same numbers reads them from ``$SHELFBENCH_CACHE/plots/`` and never imports
    matplotlib (most of a warm run's seconds otherwise)."""
    from harness.cache import digest, keep
    from harness.outcomes import harness_digest
    from harness.paths import cache_root
    from harness.provenance import version

    shown = [{k: v for k, v in r.to_json().items() if k not in NOT_PLOTTED} for r in block.rows]
    key = {
        "kind": block.kind,
        "subject": block.subject,
        "rows": json.loads(json.dumps(shown, default=str)),
        "sections": [block.section(r) for r in block.rows],  # they depend on the whole run
        "matplotlib": version("matplotlib"),
        "harness": harness_digest(),
    }
    path = cache_root() / "plots" / f"{digest(key)}.html"
    try:
        return path.read_text()
    except OSError:
        pass
    drawn = PLOTS[block.kind](block)
    keep(path, lambda p: p.write_text(drawn))
    return drawn


def history_chart(block: History, width: int = 560, height: int = 150) -> str:
    """A cell's main metric across runs as an inline SVG: the 95% interval as a band, the
    value as a line, a red dot where the paired bootstrap finds a significant drop, and
    each run's date, commit and numbers on hover (the dot's title)."""
    points = block.points
    values = [v for p in points for v in (p.low, p.high, p.value) if v == v]  # no NaN
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or 0.01
    low, high = low - pad, high + pad
    left, right, top, bottom = 56, width - 12, 10, height - 24

    def x(i: int) -> float:
        return left + (right - left) * (i / max(1, len(points) - 1))

    def y(v: float) -> float:
        return bottom - (bottom - top) * ((v - low) / (high - low)) if v == v else bottom

    band = [(x(i), y(p.high)) for i, p in enumerate(points)]
    band += [(x(i), y(p.low)) for i, p in reversed(list(enumerate(points)))]
    line = " ".join(f"{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(points))
    dots = []
    for i, p in enumerate(points):
        tip = (
            f"{p.started} commit {p.commit or '-'} weights {p.weights or '-'}: {p.metric} "
            f"{p.value:.4f} [{p.low:.4f}, {p.high:.4f}]"
            + ("" if p.change is None else f", change {p.change:+.4f}")
            + (f" ({p.verdict})" if p.verdict else "")
        )
        colour = "#d33" if p.drop else "#246"
        dots.append(
            f'<circle cx="{x(i):.1f}" cy="{y(p.value):.1f}" r="{5 if p.drop else 3.5}" '
            f'fill="{colour}"><title>{esc(tip)}</title></circle>'
        )
    labels = (
        f'<text x="4" y="{top + 10}" font-size="10">{high:.3f}</text>'
        f'<text x="4" y="{bottom}" font-size="10">{low:.3f}</text>'
        f'<text x="{left}" y="{height - 6}" font-size="10">{esc(points[0].started)}</text>'
        f'<text x="{right}" y="{height - 6}" font-size="10" text-anchor="end">'
        f"{esc(points[-1].started)}</text>"
    )
    polygon = " ".join(f"{px:.1f},{py:.1f}" for px, py in band)
    return (
        f"<p><code>{esc(block.cell)}</code> ({esc(points[0].metric)})</p>"
        f'<svg width="{width}" height="{height}" role="img">'
        f'<polygon points="{polygon}" fill="#9bd" opacity="0.4"/>'
        f'<polyline points="{line}" fill="none" stroke="#246" stroke-width="1.5"/>'
        f"{''.join(dots)}{labels}</svg>"
    )


def render(block: Block, project: Path) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{esc(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{inline(block.line)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return table(block)
    if isinstance(block, Plot):
        return plot(block)
    if isinstance(block, History):
        return history_chart(block)
    if isinstance(block, Folded):
        inner = "".join(render(b, project) for b in block.blocks)
        return f"<details><summary>{esc(block.title)}</summary>{inner}</details>"
    return galleries(block.row, project)


def html(
    provenance: dict[str, Any],
    rows: list[CellRow],
    history: dict[str, list[Any]] | None = None,
) -> str:
    head = f"<!doctype html><meta charset='utf-8'><title>shelfbench</title><style>{STYLE}</style>"
    blocks = build(provenance, rows, history)
    project = Path(str(provenance.get("project", ".")))
    return "\n".join([head, *(render(block, project) for block in blocks)]) + "\n"


def _thumbnail(image: Any, border: str) -> str:
    """A 64-px thumbnail as an embedded PNG with a coloured border."""
    image = image.copy()
    image.thumbnail((64, 64))
    if min(image.size) < 48:  # tiny images (Fashion-MNIST's 28 px) upscaled to be seen
        scale = 48 / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return (
        f'<img class="thumb" style="border-color:{border}" alt="" '
        f'src="data:image/png;base64,{data}">'
    )


def _query_row(dataset: Dataset, gallery_split: str, shown: Shown, i: int, note: str) -> str:
    """One query and its top five neighbours: green border where relevant, red where not."""
    test, gallery = dataset.split("test"), dataset.split(gallery_split)

    def name(split: Any, item: int) -> str:
        label = split.labels[item]
        return str(dataset.classes[label]) if label < len(dataset.classes) else str(label)

    query = shown.queries[i]
    first = shown.first_hit[i]
    hit = f"first relevant at rank {first + 1}" if first >= 0 else "no relevant item ranked"
    cells = [
        f"<figure title='query: test item {esc(query)}'>{_thumbnail(test.image(query), '#888')}"
        f"<figcaption>query: {esc(name(test, query))}<br><small>#{esc(query)}</small>"
        "</figcaption></figure>"
    ]
    for rank, (item, relevant) in enumerate(zip(shown.top5[i], shown.relevant[i], strict=True)):
        if item < 0:
            cells.append("<figure><figcaption>not found</figcaption></figure>")
            continue
        colour = "#2a2" if relevant else "#d33"
        cells.append(
            f"<figure title='{esc(gallery_split)} item {esc(item)}'>"
            f"{_thumbnail(gallery.image(item), colour)}<figcaption>{rank + 1}: "
            f"{esc(name(gallery, item))}<br><small>#{esc(item)}</small></figcaption></figure>"
        )
    note = f'<span class="note">{esc(note)}: {esc(hit)}</span>'
    return f'<div class="row">{note}{"".join(cells)}</div>'


@functools.cache
def _catalogue(suite: Path) -> Catalogue:
    from harness.suite import load_suite

    return load_suite(suite).catalogue


def galleries(row: CellRow, project: Path) -> str:
    """A retrieval cell's pictures: sampled and worst-ranked queries with their top five,
    and, against an incumbent or a baseline, the queries whose first hit moved most. The
    images come from the dataset of the row's suite (the file its node id names, under
    the run's ``project``)."""
    from harness.datasets.base import gallery_split
    from harness.errors import ShelfbenchError

    suite = row.node.partition("::")[0]
    try:
        catalogue = _catalogue(project / suite) if suite else BUILT_IN
        dataset = catalogue.dataset(row.dataset).open()
    except ShelfbenchError as exc:
        return f"<p>No gallery for <code>{esc(row.id)}</code>: {esc(exc)}</p>"
    split = gallery_split(row.protocol)
    parts = [f"<h3>What <code>{esc(row.id)}</code> retrieves</h3>"]
    shows = [] if row.gallery is None else [
        ("sample", "a seeded sample of queries", row.gallery.sample),
        ("worst", "the worst-ranked queries", row.gallery.worst),
    ]  # fmt: skip
    for kind, title, shown in shows:
        parts.append(f"<p>{title.capitalize()} (green: relevant, red: not):</p>")
        parts += [_query_row(dataset, split, shown, i, kind) for i in range(len(shown.queries))]
    moved = row.changed
    if moved is not None:
        parts.append(
            f"<h3>What changed against <code>{esc(moved.against)}</code></h3>"
            "<p>The queries whose first relevant neighbour moved most: the old neighbours "
            "above the new.</p>"
        )
        for i in range(len(moved.new.queries)):
            parts.append('<div class="pair">')
            parts.append(_query_row(dataset, split, moved.old, i, "before"))
            parts.append(_query_row(dataset, split, moved.new, i, "after"))
            parts.append("</div>")
    return "\n".join(parts)


PLOTS.update(heat_map=heat_map, scatter=scatter, index=index_plot)
