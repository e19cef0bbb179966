"""Result tables, as data: each function returns a ``Table`` (headers and text cells) that
the report document (``harness.document``) places and each renderer formats; and the CSV."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from harness.blocks import Code, Inline, Table
from harness.metrics import METRICS
from harness.row import CellRow


def section_of(rows: list[CellRow]) -> Callable[[CellRow], str]:
    """A row's section of the report: its dataset, or ``dataset (suite)`` where suites of
    the run declare different datasets of that name (their fingerprints differ)."""
    prints: dict[str, set[str]] = {}
    for row in rows:
        if row.dataset_fingerprint:
            prints.setdefault(row.dataset, set()).add(row.dataset_fingerprint)
    shared = {dataset for dataset, found in prints.items() if len(found) > 1}
    return lambda row: f"{row.dataset} ({row.suite})" if row.dataset in shared else row.dataset


def names(rows: list[CellRow]) -> Callable[[CellRow], str]:
    """How the report names a row: its cell id, or its node id (``a.toml::ID``) where two
    suites of the run have a cell of that id."""
    twice = {i for i, n in Counter(row.id for row in rows).items() if n > 1}
    return lambda row: row.key if row.id in twice else row.id


def sections(rows: list[CellRow]) -> dict[str, list[CellRow]]:
    """The rows by section (``section_of``), sections in order of their titles."""
    title = section_of(rows)
    out: dict[str, list[CellRow]] = {}
    for row in rows:
        out.setdefault(title(row), []).append(row)
    return dict(sorted(out.items()))


def metric_columns(rows: Iterable[CellRow], headline: bool = False) -> list[str]:
    """The registered metrics any row has, in display order (only the headline ones, for
    the terminal and the interval tables, if ``headline``)."""
    present = {m for row in rows for m in row.metrics}
    return [
        m.name for m in METRICS.in_order() if m.name in present and (m.headline or not headline)
    ]


def _cell(row: CellRow, metric: str) -> str:
    value = row.metrics.get(metric)
    if value is None:
        return ""
    floor = row.floors.get(metric)
    mark = "" if floor is None else (" ✓" if METRICS.get(metric).gain(floor, value) >= 0 else " ✗")
    return f"{value:.4f}{mark}"


def precision(row: CellRow) -> str:
    """What the cell ran at, and the precisions its floors were measured at where those
    differ (``bf16 (floors at fp32)``): a number and its floor from two precisions."""
    other = sorted({p for p in row.floors_precision.values() if p != row.precision})
    return f"{row.precision} (floors at {', '.join(other)})" if other else row.precision


def compute_seconds(row: CellRow) -> float | None:
    """What computing the cell's result took (embedding, training, evaluation), as
    recorded when it ran, whether this run computed it or read it from a cache."""
    return None if row.cost is None else row.cost.total


def verdict(row: CellRow) -> str:
    """The baseline verdict of the row's main metric ('' without a baseline)."""
    for comparison in row.baseline:
        if comparison.metric == row.main_metric:
            return f"{comparison.verdict} ({comparison.diff:+.4f})"
    return ""


def table(rows: list[CellRow], metrics: list[str]) -> Table:
    """One line per cell: outcome, metrics (✓/✗ against a floor), the embeddings' cache
    (hit or miss), "cached" where the outcome cache served the result, this run's seconds
    (train is fine-tuning plus fitting a head), and the verdict against a baseline when
    there is one."""
    with_baseline = any(row.baseline for row in rows)
    headers = ["cell", "outcome", *metrics, "precision", "cache", "result"]
    headers += ["embed s", "train s", "total s"]
    headers += ["vs baseline"] if with_baseline else []
    body = []
    name = names(rows)
    for row in rows:
        seconds = dict(row.seconds)
        if "fit" in seconds:
            seconds["train"] = seconds["fit"] + seconds.get("tune", 0.0)
        if "prompts" in seconds:  # zero-shot embeds its prompts: embedding, not training
            seconds["embed"] = seconds.get("embed", 0.0) + seconds["prompts"]
        body.append(
            [
                name(row),
                row.outcome,
                *(_cell(row, m) for m in metrics),
                precision(row),
                row.cache,
                "cached" if row.result_cache == "hit" else "",
                *(f"{seconds[p]:.1f}" if p in seconds else "" for p in ("embed", "train", "total")),
                *([verdict(row)] if with_baseline else []),
            ]
        )
    return Table(headers, body)


def interval_table(rows: list[CellRow], metrics: list[str]) -> Table:
    """Metrics with their 95% bootstrap intervals, and each cell's compute cost."""
    body = []
    name = names(rows)
    for row in rows:
        ci = row.ci
        cells = [
            f"{row.metrics[m]:.4f} [{ci[m][0]:.4f}, {ci[m][1]:.4f}]"
            if m in row.metrics and m in ci
            else ""
            for m in metrics
        ]
        cost = compute_seconds(row)
        body.append([name(row), *cells, "" if cost is None else f"{cost:.1f}"])
    return Table(["cell", *metrics, "cost s"], body)


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


def paid_by(rows: list[CellRow]) -> Callable[[CellRow], str]:
    """Which cell of the run computed a row's embeddings: ``this cell``, another cell's
    id, or ``an earlier run`` (read from the cache). Every row's cost counts them, as
    recorded when they were computed, whatever the order the cells ran in."""
    payers: dict[str, str] = {}
    for row in rows:
        if row.cache == "miss":
            for key in row.embedding_keys.values():
                payers.setdefault(key, row.id)

    def source(row: CellRow) -> str:
        if row.cache == "miss":
            return "this cell"
        found = {payers[key] for key in row.embedding_keys.values() if key in payers}
        return ", ".join(sorted(found)) or "an earlier run"

    return source


def cost_table(rows: list[CellRow]) -> Table:
    """Accuracy (the metric every strategy reports) against total compute seconds, cheapest
    first, with the rest of each cell's cost and which cell of the run computed its
    embeddings; ★ marks the Pareto front."""
    source = paid_by(rows)
    done = [(r, r.cost) for r in rows if "accuracy" in r.metrics and r.cost is not None]
    points = [(cost.total, r.metrics["accuracy"]) for r, cost in done]
    front = set(pareto_front(points))
    order = sorted(range(len(done)), key=lambda i: points[i])
    body = []
    name = names([r for r, _ in done])
    for i in order:
        row, cost = done[i]
        body.append(
            [
                name(row),
                f"{points[i][1]:.4f}",
                f"{cost.total:.1f}",
                *(f"{cost.seconds[p]:.1f}" for p in ("embed", "train", "eval")),
                _number(cost.gflops_per_image, ".3g"),
                f"{cost.train_gflops:.3g}",
                f"{cost.trainable_params:,}",
                _number(cost.peak_rss_mb, ".0f"),
                source(row),
                "★" if i in front else "",
            ]
        )
    headers = ["cell", "accuracy", "total s", "embed s", "train s", "eval s"]
    headers += ["GFLOPs/img", "train GFLOPs", "trainable", "peak RSS MB", "embedded by"]
    headers += ["Pareto"]
    return Table(headers, body)


def index_rows(rows: list[CellRow]) -> list[CellRow]:
    """The rows of cells that searched an approximate index."""
    return [row for row in rows if row.index is not None]


def _number(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def index_table(rows: list[CellRow]) -> Table:
    """Exact search against each index setting, per backbone: the main metric with its
    interval, its loss against exact with the paired-bootstrap interval (and the metric
    that loses most: a deep one such as MAP@R can fall while mMP@5 holds), neighbour
    recall, latency one query at a time, batched QPS, build time and memory."""
    indexed = [(row, row.index) for row in rows if row.index is not None]
    body = []
    for backbone in dict.fromkeys(row.backbone for row, _ in indexed):
        mine = [(row, index) for row, index in indexed if row.backbone == backbone]
        main = mine[0][0].main_metric
        exact = mine[0][1].exact_metrics[main]
        body.append([backbone, "exact", f"{exact:.4f}", "", "", "1.000", "1.000", *[""] * 6])
        for row, index in mine:
            ci = row.ci.get(main, [math.nan, math.nan])
            loss = index.loss[main]
            worst = max(index.loss, key=lambda m: index.loss[m].value)
            worst_loss = index.loss[worst]
            recall = sorted(index.neighbour_recall.items())
            value = row.metrics[main]
            memory = None if index.memory_bytes is None else index.memory_bytes / 2**20
            body.append(
                [
                    backbone,
                    row.id.partition("@")[2],
                    f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]",
                    f"{loss.value:+.4f} [{loss.low:+.4f}, {loss.high:+.4f}]",
                    f"{worst} {worst_loss.value:+.4f} [{worst_loss.low:+.4f}, "
                    f"{worst_loss.high:+.4f}]",
                    f"{recall[0][1]:.3f}",
                    f"{recall[-1][1]:.3f} (@{recall[-1][0]})",
                    _number(index.query_ms_p50, ".3f"),
                    _number(index.query_ms_p99, ".3f"),
                    _number(index.qps, ",.0f"),
                    f"{index.build_seconds:.2f}",
                    _number(memory, ".1f"),
                    "✗" if row.outcome == "failed" else "",
                ]
            )
    headers = [
        "backbone",
        "index",
        f"{indexed[0][0].main_metric} [95% CI]",
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
    return Table(headers, body)


def upgrade_table(rows: list[CellRow]) -> Table:
    """Under [upgrade]: per dataset × strategy and gated metric, the incumbent's value, the
    candidate's, their paired difference with its 95% interval, and the verdict."""
    body = []
    for row in rows:
        for c in row.upgrade:
            incumbent = c.against.split("/")[1]
            verdict = "worse beyond the tolerance" if c.regression else c.verdict
            body.append(
                [
                    row.dataset,
                    row.id.split("/", 2)[2],
                    f"{incumbent} → {row.backbone}",
                    c.metric,
                    f"{c.old:.4f}",
                    f"{c.new:.4f}",
                    f"{c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}]",
                    f"{c.max_drop:.4f}",
                    verdict,
                ]
            )
    headers = ["dataset", "strategy", "upgrade", "metric", "incumbent", "candidate"]
    headers += ["difference [95% CI]", "tolerance", "verdict"]
    return Table(headers, body)


def unreadable_counts(row: CellRow) -> str:
    """``"N of SPLIT, ..."`` for the images a cell skipped as unreadable; ``""`` if none."""
    return ", ".join(f"{n} of {split}" for split, n in row.skipped.counts.items() if n)


def recommendations(rows: list[CellRow]) -> list[dict[str, Any]]:
    """Per dataset: the most accurate cell, and the cheapest within the suite's epsilon of
    it (the study's practical question). Accuracy is the one metric every strategy
    reports; cost is the compute seconds of embedding, fitting and evaluating."""
    out = []
    for dataset, section in sections(rows).items():
        done = [r for r in section if "accuracy" in r.metrics]
        if not done:
            continue
        best = max(done, key=lambda r: r.metrics["accuracy"])
        epsilon = best.gate.epsilon
        close = [r for r in done if r.metrics["accuracy"] >= best.metrics["accuracy"] - epsilon]
        cheapest = min(close, key=lambda r: compute_seconds(r) or 0.0)
        out.append({"dataset": dataset, "best": best, "cheapest": cheapest, "epsilon": epsilon})
    return out


def recommendation_lines(rows: list[CellRow]) -> list[tuple[str, list[Inline]]]:
    """(dataset, its recommendation as inline text: cell ids as code) per dataset."""
    out = []
    for rec in recommendations(rows):
        best, cheap = rec["best"], rec["cheapest"]
        line: list[Inline] = ["best accuracy "]
        for r, between in ((best, f"; cheapest within {rec['epsilon']:.3f} of it: "), (cheap, "")):
            line += [
                Code(r.id),
                f" ({r.metrics['accuracy']:.4f}, {compute_seconds(r) or 0:.0f} s)",
            ]
            line += [between] if between else []
        out.append((rec["dataset"], line))
    return out


def to_csv(rows: list[CellRow]) -> str:
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
        flat = {**row.to_json(), **row.metrics}
        flat.update({f"{p}_s": s for p, s in row.seconds.items()})
        if row.cost is not None:
            flat.update({k: v for k, v in vars(row.cost).items() if k != "seconds"})
            flat["cost_total_s"] = row.cost.total
        writer.writerow(flat)
    return out.getvalue()


def adaptive_rows(rows: list[CellRow]) -> list[CellRow]:
    """The rows of adaptive cells that ran (their path is in ``chosen``)."""
    return [r for r in rows if r.chosen.get("path") and r.strategy == "adaptive"]


def path_table(row: CellRow) -> Table:
    """An adaptive cell's climb: per rung what it did, its cost, validation accuracy with
    its 95% interval, the predicted gain over the best so far (and its upper bound), the
    observed gain, and why."""

    def gain(value: float | None) -> str:
        return "" if value is None else f"{value:+.4f}"

    body = []
    for step in row.chosen["path"]:
        accuracy = step.get("accuracy")
        shown = ""
        if accuracy is not None:
            low, high = step["interval"]
            shown = f"{accuracy:.4f} [{low:.3f}, {high:.3f}]"
        picked = " ◀ picked" if step["rung"] == row.chosen["picked"] and step["action"] in (
            "ran", "resumed") else ""  # fmt: skip
        body.append(
            [
                step["rung"] + picked,
                step["action"],
                f"{step['seconds']:.1f}",
                shown,
                gain(step.get("predicted_gain")),
                gain(step.get("upper_gain")),
                gain(step.get("gain")),
                step["reason"],
            ]
        )
    headers = ["rung", "action", "s", "validation accuracy [95%]", "predicted gain"]
    return Table([*headers, "upper bound", "observed gain", "why"], body)


def path_summary(row: CellRow, rows: list[CellRow]) -> list[Inline]:
    """What the climb picked and spent against its budget and the exhaustive ladder, and
    its regret against the best of the ladder's own cells in the run (same dataset and
    backbone), where they ran."""
    chosen = row.chosen
    parts: list[Inline] = [
        Code(names(rows)(row)),
        f" picked {chosen['picked']}: spent {chosen['spent_seconds']:.1f} s of a "
        f"{chosen['budget_seconds']:.1f} s budget (the exhaustive ladder: an estimated "
        f"{chosen['exhaustive_seconds']:.1f} s), ε {chosen['epsilon']:g}.",
    ]
    rungs = {step["rung"] for step in chosen["path"]}
    peers = [
        r
        for r in rows
        if r.backbone == row.backbone
        and r.dataset_fingerprint == row.dataset_fingerprint
        and r.strategy in rungs
        and "accuracy" in r.metrics
    ]
    if peers and "accuracy" in row.metrics:
        best = max(peers, key=lambda r: r.metrics["accuracy"])
        regret = best.metrics["accuracy"] - row.metrics["accuracy"]
        parts.append(
            f" Regret against the ladder's cells of this run: {regret:+.4f} "
            f"(best: {best.strategy}, accuracy {best.metrics['accuracy']:.4f})."
        )
    return parts
