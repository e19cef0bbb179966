"""The report as one document: its sections are built once from the result rows, in one
order, and rendered to Markdown (``latest.md``), HTML (``latest.html``,
``harness.report_html``, which escapes every text it is given) and the terminal.

A document is a list of blocks. Text is plain strings with inline ``Code`` (cell ids)
and ``Strong`` parts: no block holds markup, so no user string (a backbone named
``<img onerror=...>``) can become markup in any renderer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from harness.blocks import (
    Block,
    Bullets,
    Code,
    Folded,
    Gallery,
    Heading,
    History,
    Line,
    Paragraph,
    Plot,
    Strong,
    Table,
)
from harness.report import (
    adaptive_rows,
    cost_table,
    index_rows,
    index_table,
    interval_table,
    metric_columns,
    names,
    path_summary,
    path_table,
    recommendation_lines,
    section_of,
    sections,
    table,
    unreadable_counts,
    upgrade_table,
)
from harness.row import CellRow


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def verdict(rows: list[CellRow]) -> list[Block]:
    """What a reviewer reads first: passed, failed and skipped counts, every cell that did
    not pass with its one-line reason (a floor, a baseline or an upgrade verdict with the
    difference and its interval), and the upgrade table when there is one."""
    name = names(rows)
    counts = {
        o: sum(r.outcome == o for r in rows) for o in ("passed", "failed", "error", "skipped")
    }
    failed = counts["failed"] + counts["error"]
    head = "FAILED" if failed else "PASSED"
    said = [f"{counts['passed']} passed, {failed} failed, {counts['skipped']} skipped"]
    blocks: list[Block] = [
        Heading(2, "Verdict"),
        Paragraph([Strong(head), ": ", *said, f" ({len(rows)} cells)"]),
    ]
    failures: list[Line] = [
        [f"{r.outcome} ", Code(name(r)), f": {first_line(r.message) or 'see the log'}"]
        for r in rows
        if r.outcome in ("failed", "error")
    ]
    if failures:
        blocks.append(Bullets(failures))
    reasons: dict[str, list[str]] = {}
    for r in rows:
        if r.outcome == "skipped":
            reasons.setdefault(first_line(r.message), []).append(name(r))
    skipped: list[Line] = [
        ["skipped ", *(part for i in ids for part in (", " if i != ids[0] else "", Code(i))),
         f": {why}"]
        for why, ids in reasons.items()
    ]  # fmt: skip
    if skipped:
        blocks.append(Bullets(skipped))
    if any(row.upgrade for row in rows):
        blocks += [
            Paragraph(
                [
                    "Upgrade: each candidate cell against the incumbent's on the same test "
                    "items (paired bootstrap; a regression is significantly worse by more than "
                    "the tolerance):"
                ]
            ),
            upgrade_table(rows),
        ]
    return blocks


def dataset_section(subset: list[CellRow], dataset: str) -> list[Block]:
    """One dataset's results: every metric with floors, intervals and cost, the
    cost-against-quality plot and table, the approximate indexes, and galleries."""
    blocks: list[Block] = [Heading(2, dataset), table(subset, metric_columns(subset))]
    scored = [r for r in subset if r.ci]
    if scored:
        blocks += [
            Paragraph(["95% bootstrap intervals over test items, and compute cost:"]),
            interval_table(scored, metric_columns(scored, headline=True)),
        ]
        if len([r for r in scored if "accuracy" in r.metrics]) > 1:
            blocks.append(Plot("scatter", dataset, scored))
    if any(r.cost for r in scored):
        blocks += [
            Paragraph(
                [
                    "Cost against quality (compute as recorded when each result was computed, "
                    "cached or not; ★: on the Pareto front):"
                ]
            ),
            cost_table(scored),
        ]
    if indexed := index_rows(scored):
        blocks += [
            Paragraph(
                [
                    "Retrieval through approximate indexes against exact search (loss: exact "
                    "minus index, paired bootstrap over the same queries; latency: one query "
                    "at a time; QPS: all queries in one batch):"
                ]
            ),
            index_table(indexed),
        ]
        if len(indexed) > 1:
            blocks.append(Plot("index", dataset, indexed))
    for row in adaptive_rows(subset):
        blocks += [Paragraph(path_summary(row, subset)), path_table(row)]
    return blocks + [Gallery(row) for row in subset if row.gallery]


def examples(row: CellRow) -> str:
    return ", ".join(row.skipped.examples[:3])


def notes(rows: list[CellRow]) -> list[Block]:
    """Skipped unreadable images, warnings, and why cells failed or were skipped."""
    name = names(rows)
    blocks: list[Block] = []
    unreadable: list[Line] = [
        [Code(name(r)), f" skipped unreadable images: {n} (e.g. {examples(r)})"]
        for r in rows
        if (n := unreadable_counts(r))
    ]
    if unreadable:
        blocks += [Heading(2, "Unreadable images"), Bullets(unreadable)]
    warned: list[Line] = [[Code(name(r)), f": {w}"] for r in rows for w in r.warnings]
    if warned:
        blocks += [Heading(2, "Warnings"), Bullets(warned)]
    problems: list[Line] = [
        [Code(name(r)), f" ({r.outcome}): {r.message}"] for r in rows if r.message
    ]
    if problems:
        blocks += [Heading(2, "Failures and skips"), Bullets(problems)]
    return blocks


def history_section(history: dict[str, list[Any]]) -> list[Block]:
    """Each cell that ran more than once: its main metric run after run."""
    followed = {cell: points for cell, points in history.items() if len(points) > 1}
    if not followed:
        return []
    lead = (
        "Each cell's main metric in the runs kept under runs/ (newest last), with its 95% "
        "interval; ▼ marks a drop the paired bootstrap finds significant."
    )
    blocks: list[Block] = [Heading(2, "History"), Paragraph([lead])]
    return blocks + [History(cell, points) for cell, points in followed.items()]


def build(
    provenance: dict[str, Any],
    rows: list[CellRow],
    history: dict[str, list[Any]] | None = None,
) -> list[Block]:
    """The whole report, in the one order every renderer shows."""
    blocks: list[Block] = [
        Heading(1, "shelfbench results"),
        *verdict(rows),
        Heading(2, "Recommendation"),
        Bullets([[Strong(dataset), ": ", *line] for dataset, line in recommendation_lines(rows)]),
        Paragraph(["✓ / ✗: at / below the suite's floor for that metric."]),
    ]
    exact = [r for r in rows if "accuracy" in r.metrics and not r.index]
    title = section_of(rows)
    mapped = [  # a heat map needs two backbones or two datasets to compare
        strategy
        for strategy in sorted({r.strategy for r in exact})
        if len({(r.backbone, title(r)) for r in exact if r.strategy == strategy}) > 1
    ]
    if mapped:
        blocks.append(Heading(2, "Accuracy by backbone and dataset"))
        blocks += [Plot("heat_map", strategy, exact, title) for strategy in mapped]
    for dataset, section in sections(rows).items():
        blocks += dataset_section(section, dataset)
    provenance_lines: list[Line] = [[f"{key}: {value}"] for key, value in provenance.items()]
    folded = Folded("Provenance", [Bullets(provenance_lines)])
    return blocks + history_section(history or {}) + notes(rows) + [folded]


def text(
    line: Line,
    code: Callable[[str], str] = "`{}`".format,
    strong: Callable[[str], str] = "**{}**".format,
    plain: Callable[[str], str] = str,
) -> str:
    """Inline text with Markdown's marks, or those ``code``, ``strong`` and ``plain`` make."""
    return "".join(
        code(part.text)
        if isinstance(part, Code)
        else strong(part.text)
        if isinstance(part, Strong)
        else plain(part)
        for part in line
    )


def markdown(blocks: list[Block]) -> str:
    """``latest.md``: the blocks Markdown can show (not plots or galleries)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [text(block.line), ""]
        elif isinstance(block, Bullets):
            lines += [f"- {text(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines += [tabulate(block.rows, block.headers, "github", disable_numparse=True), ""]
        elif isinstance(block, History):
            lines += [f"{text([Code(block.cell)])} ({block.points[0].metric}):", ""]
            lines += [tabulate(*history_table(block), "github", disable_numparse=True), ""]
        elif isinstance(block, Folded):
            lines += [markdown([Heading(2, block.title), *block.blocks])]
    return "\n".join(lines)


def history_table(block: History) -> tuple[list[list[str]], list[str]]:
    body = [
        [
            p.started,
            p.commit or "-",
            p.weights or "-",
            f"{p.value:.4f} [{p.low:.4f}, {p.high:.4f}]",
            "" if p.change is None else f"{p.change:+.4f}",
            "▼ " + p.verdict if p.drop else p.verdict,
        ]
        for p in block.points
    ]
    return body, ["started", "commit", "weights", "value [95% CI]", "change", "paired verdict"]


def summary(rows: list[CellRow]) -> list[Block]:
    """The short form (the terminal, a CI job's summary page), after the ``verdict``: per
    dataset its headline metrics (✓/✗ against floors, the baseline verdict) and index
    table."""
    blocks: list[Block] = []
    for dataset, subset in sections(rows).items():
        blocks += [Heading(3, dataset), table(subset, metric_columns(subset, headline=True))]
        if index_rows(subset):
            blocks += [
                Heading(3, f"{dataset}: each index against exact search"),
                index_table(subset),
            ]
    return blocks


def terminal(rows: list[CellRow]) -> str:
    """The verdict, then ``summary``, as plain text: each table under its title."""
    out: list[str] = []
    for block in [*verdict(rows), *summary(rows)]:
        if isinstance(block, Heading):
            out.append(("\n" if out else "") + block.text)
        elif isinstance(block, Paragraph):
            out.append(text(block.line, code=str, strong=str))
        elif isinstance(block, Bullets):
            out += [text(item, code=str, strong=str) for item in block.items]
        elif isinstance(block, Table):
            out.append(tabulate(block.rows, block.headers, "simple", disable_numparse=True))
    return "\n".join(out)


def step_summary(rows: list[CellRow]) -> str:
    """The Markdown a CI job's summary page shows (``$GITHUB_STEP_SUMMARY``): the
    summary's tables, the warnings, and why cells failed or were skipped."""
    return markdown([Heading(2, "shelfbench"), *verdict(rows), *summary(rows), *notes(rows)])
