"""Every key a suite file can hold, declared once with its kind and allowed range.

Each table of a suite file (``[profile]``, ``[gate]``, ``[backbones.NAME]``, a strategy's
parameters, an index engine's search keys, ...) is a ``Table``: a pydantic model with
strict TOML types, no unknown keys, and each field's range beside its default. ``load``
validates a table and turns the first mistake into one line naming the file, the table,
the key, the value and what the key takes, e.g.
``s.toml: [strategy.knn] neighbours = -5: must be an integer >= 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from harness.errors import ShelfbenchError, SuiteError


class Table(BaseModel):
    """A suite table: TOML's types exactly (no ``"5"`` for 5, no ``true`` for 1), finite
    numbers (TOML's ``inf`` and ``nan`` are no setting's value), no unknown keys,
    immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


# The error type of a key's own rule (``PydanticCustomError(RULE, message)`` in a
# validator): its message is the one line's reason.
RULE = "rule"


class Says:
    """What a key takes, in words, where its type and bounds do not say it all."""

    def __init__(self, text: str) -> None:
        self.text = text


def _one_field(text: str) -> str:
    fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    if fields != [""] or "{}" not in text:
        raise ValueError("needs exactly one {} where the class name goes")
    return text


Count = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0)]
Resamples = Annotated[int, Field(ge=100, le=1_000_000)]  # bootstrap resamples
Positive = Annotated[float, Field(gt=0)]
Share = Annotated[float, Field(gt=0, lt=1)]  # a part of a set: a validation split
Tolerance = Annotated[float, Field(ge=0, lt=1)]  # a metric drop tolerated (metrics are 0..1)
Unit = Annotated[float, Field(ge=0, le=1)]
Name = Annotated[str, Field(min_length=1)]
ImageSize = Annotated[int, Field(ge=8, le=4096)]
CropPct = Annotated[float, Field(gt=0, le=1)]
Template = Annotated[str, AfterValidator(_one_field), Says("a string with one {}")]
Date = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$"), Says('a date, "YYYY-MM-DD"')]


def _ordered(value: tuple[Any, Any]) -> tuple[Any, Any]:
    if value[0] > value[1]:
        raise ValueError("low is above high")
    return value


# A TOML array kept as a tuple (a parameter stays hashable): non-empty, of one kind.
Many = Field(strict=False, min_length=1)
Names = Annotated[tuple[Name, ...], Many]
Strings = Annotated[tuple[str, ...], Many]
Counts = Annotated[tuple[Count, ...], Many]
Positives = Annotated[tuple[Positive, ...], Many]
Templates = Annotated[tuple[Template, ...], Many]
Depths = Annotated[tuple[Annotated[int, Field(ge=0, le=8)], ...], Many]
# Two values, low first: a range to search or draw from.
PositiveRange = Annotated[
    tuple[Positive, Positive],
    Field(strict=False),
    AfterValidator(_ordered),
    Says("[low, high], two numbers > 0 with low <= high"),
]
CropRange = Annotated[
    tuple[CropPct, CropPct],
    Field(strict=False),
    AfterValidator(_ordered),
    Says("[low, high], two numbers in (0, 1] with low <= high"),
]


T = TypeVar("T", bound=Table)

NOUNS = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true or false", "true or false values"),
    Any: ("any value", "any values"),
}


def plural(text: str) -> str:
    """``an integer >= 1`` → ``integers >= 1``."""
    if text.startswith("a non-empty "):
        return "non-empty " + plural("a " + text.removeprefix("a non-empty "))
    for container in ("a table ", "a list "):
        if text.startswith(container):
            return container[2:-1] + "s " + text.removeprefix(container)
    for singular, many in NOUNS.values():
        if text.startswith(singular):
            return many + text[len(singular) :]
    return text


def _bounds(metadata: list[Any]) -> str:
    """`` >= 1``, `` in (0, 1]``: the bounds among ``metadata``, in words."""
    found = {}
    for m in metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if isinstance(m, annotated_types.BaseMetadata) and hasattr(m, attr):
                value = getattr(m, attr)
                found[attr] = str(value) if isinstance(value, int) else f"{value:g}"
    low = next(((a, found[a]) for a in ("ge", "gt") if a in found), None)
    high = next(((a, found[a]) for a in ("le", "lt") if a in found), None)
    if low and high:
        left, right = "[("[low[0] == "gt"], "])"[high[0] == "lt"]
        return f" in {left}{low[1]}, {high[1]}{right}"
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    bound = low or high
    return f" {signs[bound[0]]} {bound[1]}" if bound else ""


def many(annotation: Any) -> str:
    """What several values of ``annotation`` are: ``strings or numbers``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(many(a) for a in typing.get_args(annotation)))
    return plural(describe(annotation))


def describe(annotation: Any, metadata: tuple[Any, ...] = ()) -> str:
    """What a value of ``annotation`` is, in words: ``an integer >= 1``, ``one of 'avg',
    'token'``, ``a list of numbers > 0``."""
    flat = list(metadata)
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        for item in extra:
            flat += item.metadata if isinstance(item, FieldInfo) else [item]
        return describe(base, tuple(flat))
    said = next((m.text for m in flat if isinstance(m, Says)), None)
    if said is not None:
        return said
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [describe(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(options))
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (list, tuple) and (origin is list or args[-1] is Ellipsis):
        empty = "a non-empty" if any(isinstance(m, annotated_types.MinLen) for m in flat) else "a"
        return f"{empty} list of {many(args[0])}"
    if origin in (dict, Mapping):
        return f"a table of {many(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"a table of {', '.join(annotation.model_fields)}"
    noun = NOUNS.get(annotation, (getattr(annotation, "__name__", str(annotation)), ""))[0]
    if annotation is str and any(isinstance(m, annotated_types.MinLen) for m in flat):
        return "a non-empty string"
    return noun + _bounds(flat)


def toml(value: Any) -> str:
    """A value as the suite file would write it."""
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def explain(
    model: type[Table], exc: ValidationError, table: Mapping[str, Any], where: str, prefix: str = ""
) -> str:
    """The first mistake ``exc`` found in ``table``, in one line; ``prefix`` is the path
    of the table's keys inside the one ``where`` names (``search.``)."""
    error = exc.errors(include_url=False)[0]
    loc, kind = error["loc"], error["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key {prefix + str(loc[0])!r}; it takes {takes(model)}"
    if kind == "missing" and str(loc[0]) not in table:
        return f"{where}: the key {prefix + str(loc[0])!r} is missing"
    if not loc:  # a rule between keys
        return f"{where}: {error['ctx']['error'] if 'ctx' in error else error['msg']}"
    key = str(loc[0])
    if kind == RULE:  # a key's own rule (a validator) says what is wrong
        return f"{where} {prefix}{key} = {toml(table[key])}: {error['msg']}"
    return f"{where} {prefix}{key} = {toml(table[key])}: must be {rule(model, key)}"


def takes(model: type[Table]) -> str:
    """The keys a table takes, or why it takes none."""
    if model.model_fields:
        return ", ".join(model.model_fields)
    return "none (" + (model.__doc__ or "").strip().splitlines()[0].rstrip(".") + ")"


def load(
    model: type[T],
    table: Any,
    where: str,
    prefix: str = "",
    error: type[ShelfbenchError] = SuiteError,
) -> T:
    """``table`` (a TOML table) as ``model``, or ``error`` in one line."""
    if not isinstance(table, Mapping):
        raise error(f"{where} is a table of {takes(model)}, not {toml(table)}")
    try:
        return model.model_validate(dict(table))
    except ValidationError as exc:
        raise error(explain(model, exc, table, where, prefix)) from None


def value_of(kind: Any, text: str) -> Any:
    """``text`` (an option's or a variable's) as a value of ``kind``; ValueError saying
    what the kind takes."""
    try:
        return TypeAdapter(kind).validate_python(text)
    except ValidationError:
        raise ValueError(f"{text!r}: must be {describe(kind)}") from None


def argument(kind: Any) -> Callable[[str], Any]:
    """An argparse ``type`` for an option of ``kind`` (``Count``, ``Tolerance``, ...): a
    value out of its range is a usage error that says what the option takes."""

    def parse(text: str) -> Any:
        try:
            return value_of(kind, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def environment(name: str, kind: Any) -> Any:
    """``$name`` as a value of ``kind``; None where it is unset or empty, one line where
    it is out of its kind or range."""
    text = os.environ.get(name)
    if not text:
        return None
    try:
        return value_of(kind, text)
    except ValueError as exc:
        raise ShelfbenchError(f"${name} = {exc}") from None


def rule(model: type[Table], key: str) -> str:
    """What ``key`` of ``model`` takes, in words (for docs and error messages)."""
    field = model.model_fields[key]
    return describe(field.annotation, tuple(field.metadata))
