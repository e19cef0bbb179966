"""Every key a suite file takes, with its kind, range and default, read from the same
models that check suites (``harness.settings``): ``shelfbench keys`` prints it, and the
documentation's key reference is its output."""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticUndefined

from harness.backbones.declared import BackboneTable
from harness.datasets.formats import TABLES as DATASET_TABLES
from harness.index import ENGINES
from harness.settings import Table, rule, toml
from harness.strategies import STRATEGIES
from harness.suite import CellGroup, FloorSpec, Gate, Profile, Upgrade
from harness.suite_file import SuiteMeta


def tables() -> list[tuple[str, type[Table]]]:
    """Each table a suite file may hold, as it is written, with the model that checks it."""
    out: list[tuple[str, type[Table]]] = [
        ("[suite]", SuiteMeta),
        ("[profile]", Profile),
        ("[[cells]]", CellGroup),
        ('[floors."DATASET/BACKBONE/STRATEGY"] METRIC = { ... }', FloorSpec),
        ("[gate]", Gate),
        ("[upgrade]", Upgrade),
    ]
    out += [(f"[strategy.{s.name}]", s.settings) for s in STRATEGIES.in_order()]
    for engine in ENGINES.in_order():
        for part, model in (
            ("search", engine.search),
            ("build", engine.build_keys),
            ("options", engine.options),
        ):
            out.append((f'[strategy.knn] index = "{engine.name}:..." {part} = {{ ... }}', model))
    formats: dict[type[Table], list[str]] = {}
    for name, model in DATASET_TABLES.items():
        formats.setdefault(model, []).append(name)
    for model, names in formats.items():
        out.append((f"[datasets.NAME] format = {' | '.join(map(toml, names))}", model))
    out.append(("[backbones.NAME]", BackboneTable))
    return out


def default(model: type[Table], key: str) -> str:
    """A key's default as the suite file would write it; "required" if it has none."""
    field = model.model_fields[key]
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return "not set" if value is None else f"`{toml(value)}`"


def markdown() -> str:
    """The reference: per table, its description and each key's kind, range and default."""
    lines = [
        "# Suite keys",
        "",
        "Every key a suite file takes, with its kind, range and default. `shelfbench keys`",
        "prints this page; `shelfbench check SUITE.toml` checks a file against it.",
        "",
    ]
    seen: dict[type[Table], str] = {}
    for title, model in tables():
        lines += [f"## `{title}`", ""]
        if model in seen:
            lines += [f"The keys of `{seen[model]}`.", ""]
            continue
        seen[model] = title
        doc = " ".join((model.__doc__ or "").split()).replace("``", "`")
        lines += [doc, ""] if doc else []
        if not model.model_fields:
            lines += ["It takes no keys.", ""]
            continue
        lines += ["| key | takes | default |", "|---|---|---|"]
        for key in model.model_fields:
            takes = rule(model, key).replace("|", "\\|")
            lines.append(f"| `{key}` | {takes} | {default(model, key)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
