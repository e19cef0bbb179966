"""Every declared suite key refuses every value outside its kind and range, in one line
naming the key, before anything runs (a property test over all tables)."""

import json
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from harness.backbones.declared import BackboneTable
from harness.cli import main
from harness.datasets.formats import ImageFolderTable, ManifestTable, WebDatasetTable
from harness.index import ENGINES
from harness.settings import Says, Table, describe, load
from harness.strategies import STRATEGIES
from harness.suite import CellGroup, FloorSpec, Gate, Profile, Upgrade
from harness.suite_file import SuiteMeta

KNN = "synthetic-products/test-vit/knn"
BASE: dict[str, Any] = {
    "suite": {"name": "prop", "version": 1},
    "profile": {"n_train": 20, "n_test": 10, "image_size": 32},
    "gate": {"resamples": 200},
    "backbones": {"prop-mine": {"timm": "resnet18", "weights": "random"}},
    "datasets": {
        "prop-folder": {"format": "imagefolder", "root": "data"},
        "prop-rows": {"format": "csv", "root": "data"},
        "prop-shards": {"format": "webdataset", "root": "data", "splits": {"train": "a-*"}},
    },
    "cells": [
        {
            "datasets": ["synthetic-products"],
            "backbones": ["test-vit", "prop-mine"],
            "strategies": [
                "knn",
                "linear",
                "mlp",
                "finetune",
                "partial:1",
                "cross:synthetic-shelf",
                "adaptive",
            ],
        },
        {
            "datasets": ["synthetic-products"],
            "backbones": ["test-clip"],
            "strategies": ["zeroshot"],
        },
        {
            "datasets": ["synthetic-shelf"],
            "backbones": ["test-vit"],
            "strategies": ["knn"],
            "strategy": {"knn": {"index": "faiss:HNSW32", "search": {}}},
        },
        {
            "datasets": ["synthetic-shelf"],
            "backbones": ["test-clip"],
            "strategies": ["knn"],
            "strategy": {"knn": {"index": "milvus:HNSW", "search": {}, "build": {}}},
        },
    ],
    "strategy": {},
    "floors": {
        KNN: {"accuracy": {"floor": 0.1, "measured": 0.2, "date": "2026-11-30", "machine": "m"}}
    },
    "upgrade": {"incumbent": "test-vit", "candidate": "prop-mine"},
}
FAISS_CELLS, MILVUS_CELLS = ("cells", 2, "strategy", "knn"), ("cells", 3, "strategy", "knn")


def cases() -> list[tuple[tuple[Any, ...], type[Table], str]]:
    """(where in the suite, the table's model, the key) for every declared key."""
    out = []
    tables: list[tuple[tuple[Any, ...], type[Table]]] = [
        (("suite",), SuiteMeta),
        (("profile",), Profile),
        (("gate",), Gate),
        (("upgrade",), Upgrade),
        (("backbones", "prop-mine"), BackboneTable),
        (("datasets", "prop-folder"), ImageFolderTable),
        (("datasets", "prop-rows"), ManifestTable),
        (("datasets", "prop-shards"), WebDatasetTable),
        (("cells", 0), CellGroup),
        (("floors", KNN, "accuracy"), FloorSpec),
        ((*FAISS_CELLS, "search"), ENGINES.get("faiss").search),
        ((*MILVUS_CELLS, "search"), ENGINES.get("milvus").search),
        ((*MILVUS_CELLS, "build"), ENGINES.get("milvus").build_keys),
        ((*MILVUS_CELLS, "options"), ENGINES.get("milvus").options),
    ]
    tables += [(("strategy", s.name), s.settings) for s in STRATEGIES]
    for where, model in tables:
        out += [(where, model, key) for key in model.model_fields if key != "format"]
    return out


CASES = cases()
SAID = {  # values each worded rule refuses
    "a string with one {}": ["plain", "{1}", "{} and {}", "{name}", ""],
    'a date, "YYYY-MM-DD"': ["2026-1-1", "yesterday", ""],
    "a Hugging Face repo id, 'org/name'": ["a/b/c", "bad repo", "", "--x"],
    "'package.module:function'": ["pkg.mod", "x:", "", "a b:c"],
}
ANY = st.one_of(
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=True),
    st.text("abc{} /", max_size=6),
    st.booleans(),
)


def flat(annotation: Any) -> tuple[Any, list[Any]]:
    metadata: list[Any] = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            metadata += item.metadata if isinstance(item, FieldInfo) else [item]
    return annotation, metadata


def accepts(kind: type, value: Any) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def wrong(annotation: Any) -> st.SearchStrategy[Any]:
    """Values outside ``annotation``'s kind and range, as TOML can write them."""
    annotation, metadata = flat(annotation)
    said = next((m.text for m in metadata if isinstance(m, Says)), None)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if said in SAID:
        return st.sampled_from(SAID[said]) | ANY.filter(lambda v: not isinstance(v, str))
    if origin in (typing.Union, __import__("types").UnionType):
        members = [a for a in args if a is not type(None)]
        kinds = [flat(m)[0] for m in members]

        def fits(kind: Any, v: Any) -> bool:
            if typing.get_origin(kind) is Literal:
                return v in typing.get_args(kind)
            return accepts(typing.get_origin(kind) or kind, v)

        listed = any(typing.get_origin(k) in (list, tuple) for k in kinds)
        return ANY.filter(lambda v: not any(fits(k, v) for k in kinds)) | (
            st.just([]) if listed else st.nothing()
        )
    if origin is Literal:
        return ANY.filter(lambda v: v not in args)
    if origin in (list, tuple):
        item = wrong(args[0])
        shape = st.lists(item, min_size=1, max_size=2)
        if args[-1] is not Ellipsis:  # a pair: the wrong length, or high below low
            return shape | st.just([1, 2, 3]) | st.just([0.5, 0.25]) | ANY
        return shape | st.just([]) | ANY.filter(lambda v: not isinstance(v, list))
    if origin is dict:
        return ANY
    if annotation is bool:
        return ANY.filter(lambda v: not isinstance(v, bool))
    if annotation is str:
        empty = any(isinstance(m, annotated_types.MinLen) for m in metadata)
        return ANY.filter(lambda v: not isinstance(v, str)) | (
            st.just("") if empty else st.nothing()
        )
    outside = []
    for m in metadata:
        for attr, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
            if hasattr(m, attr):
                edge = getattr(m, attr)
                outside.append(st.just(edge + step if annotation is int else edge + step / 2))
                if attr in ("gt", "lt"):
                    outside.append(st.just(edge))
    outside.append(
        st.sampled_from([float("inf"), float("nan")]) if annotation is float else st.nothing()
    )
    return st.one_of(*outside, ANY.filter(lambda v: not accepts(annotation, v)))


def to_toml(suite: dict[str, Any]) -> str:
    """A minimal TOML writer for the suite dict: tables, [[cells]], inline values."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, float):
            return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(v), repr(v))
        return json.dumps(v)

    lines = []
    for name, table in suite.items():
        if name == "cells":
            for group in table:
                lines += ["[[cells]]", *(f"{k} = {value(v)}" for k, v in group.items()), ""]
            continue
        nested = name in ("backbones", "datasets", "strategy", "floors")
        for sub, body in table.items() if nested else [(None, table)]:
            lines.append(f"[{name}]" if sub is None else f"[{name}.{json.dumps(sub)}]")
            lines += [f"{json.dumps(k)} = {value(v)}" for k, v in body.items()] + [""]
    return "\n".join(lines)


def with_value(where: tuple[Any, ...], key: str, bad: Any) -> dict[str, Any]:
    suite = json.loads(json.dumps(BASE))
    table = suite
    for part in where:
        table = table.setdefault(part, {}) if isinstance(table, dict) else table[part]
    table[key] = bad
    return suite


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    """One folder for every suite here: a declared dataset's root is relative to its suite
    file, and a name declared twice with two roots is a clash."""
    folder = tmp_path_factory.mktemp("suites")
    (folder / "data").mkdir()  # the declared datasets' root: `check` fails a missing one
    return folder


def test_the_base_suite_is_valid(suite_dir, capsys):
    path = suite_dir / "s.toml"
    path.write_text(to_toml(BASE))
    assert main(["check", str(path)]) == 0, capsys.readouterr().err
    assert len(CASES) > 90  # every table of every strategy and engine


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_key_refuses_every_value_outside_its_range(data, suite_dir, capsys):
    where, model, key = data.draw(st.sampled_from(CASES), label="key")
    bad = data.draw(wrong(model.model_fields[key].annotation), label="value")
    path = suite_dir / "s.toml"
    path.write_text(to_toml(with_value(where, key, bad)))
    code = main(["check", str(path)])
    err = capsys.readouterr().err
    assert code in (1, 2), f"{key} = {bad!r} was accepted"
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err and key in err, err
    cache = Path(os.environ["SHELFBENCH_CACHE"])
    assert not cache.exists() or not any(cache.iterdir()), "a refused suite cached something"


# The inputs that crashed a cell or, worse, gave a number (a gate that could not fail).
ISSUE_INPUTS = [
    (("profile",), "image_size", 0, "[profile] image_size = 0: must be an integer in [8, 4096]"),
    (("profile",), "crop_pct", 2, "[profile] crop_pct = 2: must be a number in (0, 1]"),
    (("profile",), "batch_size", 0, "[profile] batch_size = 0: must be an integer in [1, 65536]"),
    (("profile",), "n_test", 0, "[profile] n_test = 0: must be an integer >= 1"),
    (("gate",), "resamples", 0, "[gate] resamples = 0: must be an integer in [100, 1000000]"),
    (
        ("strategy", "knn"),
        "neighbours",
        -5,
        "[strategy.knn] neighbours = -5: must be an integer >= 1",
    ),
    (
        ("strategy", "knn"),
        "neighbours",
        0,
        "[strategy.knn] neighbours = 0: must be an integer >= 1",
    ),
    ((*FAISS_CELLS, "search"), "efSearch", -1, "search.efSearch = -1: must be an integer >= 1"),
    ((*FAISS_CELLS, "search"), "nprobe", "x", 'search.nprobe = "x": must be an integer >= 1'),
    (("gate",), "max_drop", 2.0, "[gate] max_drop = 2.0: must be a number in [0, 1)"),
    (("gate",), "max_drop", -0.5, "[gate] max_drop = -0.5: must be a number in [0, 1)"),
    (("upgrade",), "max_drop", 2.0, "[upgrade] max_drop = 2.0: must be a number in [0, 1)"),
    (FAISS_CELLS, "max_index_loss", -0.1, "max_index_loss = -0.1: must be a number in [0, 1)"),
    (FAISS_CELLS, "max_index_loss", "x", 'max_index_loss = "x": must be a number in [0, 1)'),
    (("backbones", "prop-mine"), "pooling", "median", 'pooling = "median": must be one of "avg"'),
    (("strategy", "zeroshot"), "templates", ["a photo"], 'templates = ["a photo"]: must be a'),
    (
        ("strategy", "zeroshot"),
        "templates",
        ["{1}"],
        "must be a non-empty list of strings with one {}",
    ),
]


@pytest.mark.parametrize(("where", "key", "value", "line"), ISSUE_INPUTS)
def test_the_line_names_file_table_key_value_and_range(suite_dir, capsys, where, key, value, line):
    path = suite_dir / "s.toml"
    path.write_text(to_toml(with_value(where, key, value)))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"shelfbench: error: {path}: ") and line in err, err


def test_describe_states_kind_and_range():
    assert describe(Profile.model_fields["crop_pct"].annotation) == "a number in (0, 1]"
    assert load(Gate, {"max_drop": 0.5}, "g").max_drop == 0.5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "a.json", "b.json", "--resamples", "0"], "'0': must be an integer in"),
        (["compare", "a.json", "b.json", "--max-drop", "2"], "'2': must be a number in [0, 1)"),
        (["history", "--last", "-1"], "'-1': must be an integer >= 1"),
    ],
)
def test_command_options_have_the_ranges_of_the_suite_keys(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_the_documented_keys_are_the_keys_suites_take():
    """docs/keys.md is `shelfbench keys`: regenerate it when a table changes."""
    from harness.keys import markdown

    documented = Path(__file__).parents[1] / "docs" / "keys.md"
    assert documented.read_text() == markdown(), "run: shelfbench keys > docs/keys.md"
