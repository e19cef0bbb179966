"""The self-contained HTML report: tables, a heat map and cost-vs-quality scatters, with the
images embedded as base64 PNG (matplotlib, imported only here)."""

from __future__ import annotations

import base64
import html as escape
import io
from typing import Any

from harness.report import (
    cost_table,
    index_rows,
    index_table,
    interval_table,
    metric_columns,
    pareto_front,
    recommendation_sentences,
    table,
    upgrade_table,
)

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%}"""


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return (
        f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
    )


def heat_map(rows: list[dict[str, Any]], strategy: str) -> str:
    """Backbone × dataset accuracy of one strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = [r for r in rows if r["strategy"] == strategy and "accuracy" in r.get("metrics", {})]
    backbones = sorted({r["backbone"] for r in cells})
    datasets = sorted({r["dataset"] for r in cells})
    grid = np.full((len(backbones), len(datasets)), np.nan)
    for r in cells:
        grid[backbones.index(r["backbone"]), datasets.index(r["dataset"])] = r["metrics"][
            "accuracy"
        ]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(datasets), 0.8 + 0.45 * len(backbones)))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_yticks(range(len(backbones)), backbones)
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(
                j,
                i,
                f"{value:.3f}",
                ha="center",
                va="center",
                color="white" if value < 0.6 else "black",
            )
    ax.set_title(f"{strategy}: accuracy")
    fig.colorbar(image, ax=ax)
    return _png(fig)


def scatter(rows: list[dict[str, Any]], dataset: str) -> str:
    """Accuracy against compute seconds (log scale), the Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r for r in rows if r["dataset"] == dataset and "accuracy" in r.get("metrics", {})]
    points = [(max(r["seconds"]["cost"], 1e-3), r["metrics"]["accuracy"]) for r in cells]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy in sorted({r["strategy"] for r in cells}):
        mine = [p for p, r in zip(points, cells, strict=True) if r["strategy"] == strategy]
        ax.scatter(*zip(*mine, strict=True), label=strategy, s=40)
    for point, row in zip(points, cells, strict=True):
        ax.annotate(row["backbone"], point, fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.plot(*zip(*(points[i] for i in front), strict=True), "k--", lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("compute seconds (embed + train + eval)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{dataset}: cost against quality")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def index_plot(rows: list[dict[str, Any]], dataset: str) -> str:
    """Neighbour recall@10 against batched queries per second, one series per backbone,
    with the Pareto front (more recall, more QPS) of each drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backbone in sorted({r["backbone"] for r in rows}):
        mine = [r for r in rows if r["backbone"] == backbone and r["index"].get("qps")]
        points = [(1 / r["index"]["qps"], r["index"]["neighbour_recall@10"]) for r in mine]
        shown = [(p[1], 1 / p[0]) for p in points]
        dots = ax.scatter(*zip(*shown, strict=True), s=36, label=backbone)
        for point, row in zip(shown, mine, strict=True):
            label = row["id"].partition("@")[2]
            ax.annotate(label, point, fontsize=7, xytext=(4, 3), textcoords="offset points")
        front = [shown[i] for i in pareto_front(points)]
        ax.plot(*zip(*front, strict=True), "--", lw=1, color=dots.get_facecolor()[0])
    ax.set_yscale("log")
    ax.set_xlabel("neighbour recall@10 (overlap with exact search's top 10)")
    ax.set_ylabel("queries per second (batched)")
    ax.set_title(f"{dataset}: recall against speed (dashed: Pareto front)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def html(provenance: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    done = [r for r in rows if "accuracy" in r.get("metrics", {})]
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>shelfbench</title><style>{STYLE}</style>",
        "<h1>shelfbench results</h1><ul>",
    ]
    parts += [
        f"<li>{escape.escape(str(k))}: {escape.escape(str(v))}</li>" for k, v in provenance.items()
    ]
    parts.append("</ul><h2>Recommendation</h2><ul>")
    parts += [
        f"<li><b>{escape.escape(dataset)}</b>: {text}</li>"
        for dataset, text in recommendation_sentences(rows, lambda cell: f"<code>{cell}</code>")
    ]
    parts.append("</ul>")
    if any(r.get("upgrade") for r in rows):
        parts += [
            "<h2>Upgrade</h2><p>Each candidate cell against the incumbent's on the same test "
            "items (paired bootstrap; a regression is significantly worse by more than the "
            "tolerance):</p>",
            upgrade_table(rows, "html"),
        ]
    exact = [r for r in done if not r.get("index")]
    if exact:
        parts.append("<h2>Accuracy by backbone and dataset</h2>")
        parts += [heat_map(exact, s) for s in sorted({r["strategy"] for r in exact})]
    for dataset in sorted({r["dataset"] for r in rows}):
        subset = [r for r in rows if r["dataset"] == dataset]
        parts += [
            f"<h2>{escape.escape(dataset)}</h2>",
            table(subset, metric_columns(subset), "html"),
        ]
        scored = [r for r in subset if r.get("ci")]
        if scored:
            main = metric_columns(scored, headline=True)
            parts += [
                "<p>95% bootstrap intervals over test items, and compute cost:</p>",
                interval_table(scored, main, "html"),
                scatter(scored, dataset),
            ]
            if any(r.get("cost") for r in scored):
                parts += [
                    "<p>Cost against quality (★: on the Pareto front):</p>",
                    cost_table(scored, "html"),
                ]
            indexed = index_rows(scored)
            if indexed:
                parts += [
                    "<p>Retrieval through approximate indexes against exact search (loss: "
                    "exact minus index, paired bootstrap; latency: one query at a time):</p>",
                    index_table(indexed, "html"),
                ]
                if len(indexed) > 1:
                    parts.append(index_plot(indexed, dataset))
        for row in subset:
            for warning in row.get("warnings", []):
                parts.append(f"<p><code>{row['id']}</code> warning: {escape.escape(warning)}</p>")
            if row.get("message"):
                parts.append(
                    f"<p><code>{row['id']}</code> ({row['outcome']}): "
                    f"{escape.escape(row['message'])}</p>"
                )
    return "\n".join(parts) + "\n"
