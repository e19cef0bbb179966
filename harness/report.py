"""Result tables: the terminal summary, and the Markdown and CSV reports' text."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from typing import Any

from tabulate import tabulate

from harness.metrics import METRICS

SCHEMA = 1


def metric_columns(rows: Iterable[dict[str, Any]], headline: bool = False) -> list[str]:
    """The registered metrics any row has, in display order (only the headline ones, for
    the terminal and the interval tables, if ``headline``)."""
    present = {m for row in rows for m in row.get("metrics", {})}
    return [
        m.name for m in METRICS.in_order() if m.name in present and (m.headline or not headline)
    ]


def _cell(row: dict[str, Any], metric: str) -> str:
    value = row.get("metrics", {}).get(metric)
    if value is None:
        return ""
    floor = row.get("floors", {}).get(metric)
    mark = "" if floor is None else (" ✓" if METRICS.get(metric).gain(floor, value) >= 0 else " ✗")
    return f"{value:.4f}{mark}"


def verdict(row: dict[str, Any]) -> str:
    """The baseline verdict of the row's main metric ('' without a baseline)."""
    for comparison in row.get("baseline", []):
        if comparison["metric"] == row.get("main_metric"):
            return f"{comparison['verdict']} ({comparison['diff']:+.4f})"
    return ""


def table(rows: list[dict[str, Any]], metrics: list[str], fmt: str) -> str:
    """One line per cell: outcome, metrics (✓/✗ against a floor), cache, this run's
    seconds (train is fine-tuning plus fitting a head), and the verdict against a baseline
    when there is one."""
    with_baseline = any(row.get("baseline") for row in rows)
    headers = ["cell", "outcome", *metrics, "precision", "cache", "embed s", "train s", "total s"]
    headers += ["vs baseline"] if with_baseline else []
    body = []
    for row in rows:
        seconds = dict(row.get("seconds", {}))
        if "fit" in seconds:
            seconds["train"] = seconds["fit"] + seconds.get("tune", 0.0)
        body.append(
            [
                row["id"],
                row["outcome"],
                *(_cell(row, m) for m in metrics),
                row.get("precision", ""),
                row.get("cache", ""),
                *(f"{seconds[p]:.1f}" if p in seconds else "" for p in ("embed", "train", "total")),
                *([verdict(row)] if with_baseline else []),
            ]
        )
    return tabulate(body, headers, tablefmt=fmt, disable_numparse=True)


def interval_table(rows: list[dict[str, Any]], metrics: list[str], fmt: str) -> str:
    """Metrics with their 95% bootstrap intervals, and each cell's compute cost."""
    body = []
    for row in rows:
        ci = row.get("ci", {})
        cells = [
            f"{row['metrics'][m]:.4f} [{ci[m][0]:.4f}, {ci[m][1]:.4f}]"
            if m in row.get("metrics", {}) and m in ci
            else ""
            for m in metrics
        ]
        cost = row.get("seconds", {}).get("cost")
        body.append([row["id"], *cells, "" if cost is None else f"{cost:.1f}"])
    return tabulate(body, ["cell", *metrics, "cost s"], tablefmt=fmt, disable_numparse=True)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both cost (lower) and quality (higher),
    ordered by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def cost_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """Accuracy (the metric every strategy reports) against total compute seconds, cheapest
    first, with the rest of each cell's cost; ★ marks the Pareto front."""
    done = [r for r in rows if "accuracy" in r.get("metrics", {}) and r.get("cost")]
    points = [(r["cost"]["seconds"]["total"], r["metrics"]["accuracy"]) for r in done]
    front = set(pareto_front(points))
    order = sorted(range(len(done)), key=lambda i: points[i])
    body = []
    for i in order:
        cost = done[i]["cost"]
        seconds = cost["seconds"]
        body.append(
            [
                done[i]["id"],
                f"{points[i][1]:.4f}",
                f"{seconds['total']:.1f}",
                *(f"{seconds[p]:.1f}" for p in ("embed", "train", "eval")),
                f"{cost['gflops_per_image']:.3g}",
                f"{cost['train_gflops']:.3g}",
                f"{cost['trainable_params']:,}",
                f"{cost['peak_rss_mb']:.0f}",
                "★" if i in front else "",
            ]
        )
    headers = ["cell", "accuracy", "total s", "embed s", "train s", "eval s"]
    headers += ["GFLOPs/img", "train GFLOPs", "trainable", "peak RSS MB", "Pareto"]
    return tabulate(body, headers, tablefmt=fmt, disable_numparse=True)


def index_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of cells that searched an approximate index."""
    return [row for row in rows if row.get("index")]


def _number(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def index_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """Exact search against each index setting, per backbone: the main metric with its
    interval, its loss against exact with the paired-bootstrap interval (and the metric
    that loses most: a deep one such as MAP@R can fall while mMP@5 holds), neighbour
    recall, latency one query at a time, batched QPS, build time and memory."""
    indexed = index_rows(rows)
    body = []
    for backbone in dict.fromkeys(row["backbone"] for row in indexed):
        mine = [row for row in indexed if row["backbone"] == backbone]
        main = mine[0]["main_metric"]
        exact = mine[0]["index"]["exact_metrics"][main]
        body.append([backbone, "exact", f"{exact:.4f}", "", "", "1.000", "1.000", *[""] * 6])
        for row in mine:
            index, ci = row["index"], row["ci"].get(main, [None, None])
            loss = index["loss"][main]
            worst = max(index["loss"], key=lambda m: index["loss"][m]["value"])
            worst_loss = index["loss"][worst]
            recall = sorted(
                (int(key.rpartition("@")[2]), v)
                for key, v in index.items()
                if key.startswith("neighbour_recall@")
            )
            value = row["metrics"][main]
            body.append(
                [
                    backbone,
                    row["id"].partition("@")[2],
                    f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]",
                    f"{loss['value']:+.4f} [{loss['low']:+.4f}, {loss['high']:+.4f}]",
                    f"{worst} {worst_loss['value']:+.4f} [{worst_loss['low']:+.4f}, "
                    f"{worst_loss['high']:+.4f}]",
                    f"{recall[0][1]:.3f}",
                    f"{recall[-1][1]:.3f} (@{recall[-1][0]})",
                    _number(index["query_ms_p50"], ".3f"),
                    _number(index["query_ms_p99"], ".3f"),
                    _number(index["qps"], ",.0f"),
                    f"{index['build_seconds']:.2f}",
                    _number(index["memory_bytes"] and index["memory_bytes"] / 2**20, ".1f"),
                    "✗" if row.get("outcome") == "failed" else "",
                ]
            )
    headers = [
        "backbone",
        "index",
        f"{indexed[0]['main_metric']} [95% CI]",
        "loss vs exact [95% CI]",
        "largest loss [95% CI]",
        "neighbour recall@10",
        "at the deepest k",
        "p50 ms",
        "p99 ms",
        "QPS",
        "build s",
        "memory MB",
        "",
    ]
    return tabulate(body, headers, tablefmt=fmt, disable_numparse=True)


def upgrade_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """Under [upgrade]: per dataset × strategy and gated metric, the incumbent's value, the
    candidate's, their paired difference with its 95% interval, and the verdict."""
    body = []
    for row in rows:
        for c in row.get("upgrade", []):
            incumbent = c["incumbent"].split("/")[1]
            verdict = "worse beyond the tolerance" if c["regression"] else c["verdict"]
            body.append(
                [
                    row["dataset"],
                    row["id"].split("/", 2)[2],
                    f"{incumbent} → {row['backbone']}",
                    c["metric"],
                    f"{c['old']:.4f}",
                    f"{c['new']:.4f}",
                    f"{c['diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]",
                    f"{c['max_drop']:.4f}",
                    verdict,
                ]
            )
    headers = ["dataset", "strategy", "upgrade", "metric", "incumbent", "candidate"]
    headers += ["difference [95% CI]", "tolerance", "verdict"]
    return tabulate(body, headers, tablefmt=fmt, disable_numparse=True)


def unreadable_counts(row: dict[str, Any]) -> str:
    """``"N of SPLIT, ..."`` for the images a cell skipped as unreadable; ``""`` if none."""
    skipped = row.get("skipped", {})
    return ", ".join(f"{n} of {split}" for split, n in skipped.items() if split != "examples" and n)


def recommendations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset: the most accurate cell, and the cheapest within the suite's epsilon of
    it (the study's practical question). Accuracy is the one metric every strategy
    reports; cost is the compute seconds of embedding, fitting and evaluating."""
    out = []
    for dataset in sorted({row["dataset"] for row in rows}):
        done = [r for r in rows if r["dataset"] == dataset and "accuracy" in r.get("metrics", {})]
        if not done:
            continue
        best = max(done, key=lambda r: r["metrics"]["accuracy"])
        epsilon = best.get("gate", {}).get("epsilon", 0.01)
        close = [
            r for r in done if r["metrics"]["accuracy"] >= best["metrics"]["accuracy"] - epsilon
        ]
        cheapest = min(close, key=lambda r: r["seconds"]["cost"])
        out.append({"dataset": dataset, "best": best, "cheapest": cheapest, "epsilon": epsilon})
    return out


def recommendation_sentences(
    rows: list[dict[str, Any]], code: Callable[[str], str] = lambda text: f"`{text}`"
) -> list[tuple[str, str]]:
    """(dataset, sentence) per dataset; ``code`` formats a cell id for the output format."""
    out = []
    for rec in recommendations(rows):
        best, cheap = rec["best"], rec["cheapest"]
        summary = [
            f"{code(r['id'])} ({r['metrics']['accuracy']:.4f}, {r['seconds']['cost']:.0f} s)"
            for r in (best, cheap)
        ]
        out.append(
            (
                rec["dataset"],
                f"best accuracy {summary[0]}; cheapest within "
                f"{rec['epsilon']:.3f} of it: {summary[1]}",
            )
        )
    return out


def terminal_table(rows: list[dict[str, Any]]) -> str:
    """One table per dataset, in the order the datasets first ran, and its index table
    where cells searched an approximate index."""
    blocks = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        subset = [row for row in rows if row["dataset"] == dataset]
        blocks.append(
            f"{dataset}\n{table(subset, metric_columns(subset, headline=True), 'simple')}"
        )
        if index_rows(subset):
            blocks.append(
                f"{dataset}: each index against exact search\n{index_table(subset, 'simple')}"
            )
    if any(row.get("upgrade") for row in rows):
        blocks.append(
            f"upgrade: each candidate cell against the incumbent's\n{upgrade_table(rows, 'simple')}"
        )
    return "\n\n".join(blocks)


def markdown(provenance: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["# shelfbench results", ""]
    lines += [f"- {key}: {value}" for key, value in provenance.items()]
    lines += ["", "✓ / ✗: at / below the suite's floor for that metric.", ""]
    lines += ["## Recommendation", ""]
    lines += [f"- **{dataset}**: {text}" for dataset, text in recommendation_sentences(rows)]
    lines.append("")
    for dataset in sorted({row["dataset"] for row in rows}):
        subset = [row for row in rows if row["dataset"] == dataset]
        lines += [f"## {dataset}", "", table(subset, metric_columns(subset), "github"), ""]
        done = [row for row in subset if row.get("ci")]
        if done:
            main = metric_columns(done, headline=True)
            lines += [
                "95% bootstrap intervals over test items, and compute cost:",
                "",
                interval_table(done, main, "github"),
                "",
            ]
        if any(row.get("cost") for row in done):
            lines += [
                "Cost against quality (compute as recorded when each result was computed, "
                "cached or not; ★: on the Pareto front):",
                "",
                cost_table(done, "github"),
                "",
            ]
        if index_rows(done):
            lines += [
                "Retrieval through approximate indexes against exact search (loss: exact "
                "minus index, paired bootstrap over the same queries; latency: one query at "
                "a time; QPS: all queries in one batch):",
                "",
                index_table(done, "github"),
                "",
            ]
    if any(row.get("upgrade") for row in rows):
        lines += [
            "## Upgrade",
            "",
            "Each candidate cell against the incumbent's on the same test items (paired "
            "bootstrap; a regression is significantly worse by more than the tolerance):",
            "",
            upgrade_table(rows, "github"),
            "",
        ]
    for row in rows:
        if counts := unreadable_counts(row):
            lines.append(
                f"- `{row['id']}` skipped unreadable images: {counts} "
                f"(e.g. {', '.join(row['skipped']['examples'][:3])})"
            )
    warned = [(row["id"], w) for row in rows for w in row.get("warnings", [])]
    if warned:
        lines += ["", "## Warnings", ""]
        lines += [f"- `{cell}`: {warning}" for cell, warning in warned]
        lines.append("")
    problems = [row for row in rows if row.get("message")]
    if problems:
        lines += ["## Failures and skips", ""]
        lines += [f"- `{row['id']}` ({row['outcome']}): {row['message']}" for row in problems]
        lines.append("")
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    metrics = metric_columns(rows)
    fields = [
        "id",
        "dataset",
        "backbone",
        "strategy",
        "outcome",
        *metrics,
        "precision",
        "cache",
        "n_train",
        "n_test",
        "embed_s",
        "fit_s",
        "eval_s",
        "total_s",
        "cost_total_s",
        "gflops_per_image",
        "train_gflops",
        "trainable_params",
        "peak_rss_mb",
        "device",
        "dataset_fingerprint",
        "weights_sha256",
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {**row, **row.get("metrics", {})}
        flat.update({f"{p}_s": s for p, s in row.get("seconds", {}).items()})
        cost = row.get("cost") or {}
        flat.update({k: v for k, v in cost.items() if k != "seconds"})
        if cost:
            flat["cost_total_s"] = cost["seconds"]["total"]
        writer.writerow(flat)
    return out.getvalue()
