"""``shelfbench list``, ``weights`` and ``data``: the registries, and the weights and
dataset files on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.commands import Subparsers
from harness.errors import ShelfbenchError


def _list(args: argparse.Namespace) -> None:
    from harness.catalogue import BUILT_IN

    catalogue = BUILT_IN
    if args.suite is not None:  # with the suite's own datasets and backbones
        from harness.suite import load_suite

        catalogue = load_suite(args.suite).catalogue
    if args.what == "datasets":
        rows = [
            [d.name, d.domain, len(d.classes), ",".join(d.splits), d.protocol, d.source]
            for d in catalogue.all_datasets()
        ]
        headers = ["name", "domain", "classes", "splits", "protocol", "source"]
    elif args.what == "backbones":
        rows = [
            [
                b.name,
                b.family,
                b.kind,
                b.source,
                b.identifier,
                b.embed_dim or "from model",
                b.pooling,
                _availability(b),
            ]
            for b in catalogue.all_backbones()
            if args.family in (None, b.family)
        ]
        if args.available:
            rows = [row for row in rows if row[-1] in ("user", "hf-cache", "package", "random")]
        headers = ["name", "family", "kind", "source", "identifier", "dim", "pooling", "weights"]
    else:
        from harness.strategies import STRATEGIES

        rows = [
            [f"{s.name}:{s.argument}" if s.argument else s.name, s.main_metric, s.description]
            for s in STRATEGIES
        ]
        headers = ["name", "main metric", "description"]
    print(tabulate(rows, headers))


def _availability(spec: Any) -> str:
    """Where the weights would come from: user, hf-cache, package, random; or why not."""
    from harness.backbones import resolve
    from harness.errors import Unavailable

    try:
        return resolve(spec).origin
    except Unavailable:
        return "missing"
    except ShelfbenchError:
        return "invalid (run `shelfbench weights verify`)"


def _backbones(names: list[str], suites_dir: Path) -> list[Any]:
    """Backbone specs named directly, or used by a suite (a name in suites_dir or a path)."""
    from harness.catalogue import BUILT_IN
    from harness.suite import load_suite

    specs: dict[str, Any] = {}
    known = {b.name for b in BUILT_IN.all_backbones()}
    for name in names:
        path = Path(name) if name.endswith(".toml") else suites_dir / f"{name}.toml"
        if name not in known and path.is_file():
            for cell in load_suite(path).cells:
                specs.setdefault(cell.backbone, cell.backbone_spec)
        else:
            specs.setdefault(name, BUILT_IN.backbone(name))
    return list(specs.values())


def _weights(args: argparse.Namespace) -> None:
    from harness.backbones import weights
    from harness.errors import Unavailable

    failed = 0
    for spec in _backbones(args.names, args.suites_dir):
        try:
            if args.action == "fetch":
                found = weights.fetch(spec)
                print(f"ok       {spec.name}: {found.path} ({found.origin})")
            else:
                print(f"ok       {spec.name}: {_verify_weights(spec)}")
        except Unavailable as exc:
            failed += 1
            print(f"missing  {spec.name}: {exc}")
        except ShelfbenchError as exc:
            failed += 1
            print(f"invalid  {spec.name}: {exc}")
    if failed:
        raise ShelfbenchError(f"{failed} backbone(s) without usable weights; see above")


def _verify_weights(spec: Any) -> str:
    """Re-hash what resolution finds (ignoring the hash memo) and compare it with the hash
    that pins it (the registry's, or a Hugging Face blob's name); a file nothing pins must
    still load as the loader would load it."""
    from harness.backbones.checkpoints import load_state
    from harness.backbones.files import hash_file, hub_blob_sha256
    from harness.backbones.weights import resolve

    found = resolve(spec)
    if found.path is None or found.path.is_dir():
        return f"{found.origin}, sha256 {found.sha256[:12]}…"
    actual = hash_file(found.path)
    expected = spec.weights.sha256 or hub_blob_sha256(found.path)
    if not expected:
        load_state(found.path)
        return (
            f"{found.path} ({found.origin}), sha256 {actual[:12]}…; unverified: no recorded "
            "hash (it loads as tensors)"
        )
    if actual != expected:
        raise ShelfbenchError(
            f"{found.path}: sha256 {actual[:12]}… but expected "
            f"{expected[:12]}…; delete it and fetch it again"
        )
    return f"{found.path} ({found.origin}), sha256 {actual[:12]}… verified"


def _fetch(args: argparse.Namespace) -> None:
    from harness.datasets import DATASETS
    from harness.paths import cache_root, directory

    spec = DATASETS.get(args.name)
    if spec.fetch is None:
        raise ShelfbenchError(f"{args.name} has no download; its source: {spec.source}")
    root = directory(args.root or cache_root() / "data", "data fetch --root")
    print(f"{args.name} is in {spec.fetch(root)}")


def _verify_data(args: argparse.Namespace) -> int:
    from harness.datasets import DATASETS, open_dataset, public

    DATASETS.get(args.name)
    if args.name not in public.FACTS:
        dataset = open_dataset(args.name)  # its loader checks every file's hash
        print(f"{args.name}: {sum(len(s) for s in dataset.splits.values())} items, verified")
        return 0
    problems = public.verify(args.name, args.root / args.name if args.root else None)
    facts = public.FACTS[args.name]
    for problem in problems:
        print(f"{args.name}: {problem}")
    if problems:
        print(f"{args.name}: differs from the release ({facts.reference})")
        return 1
    print(f"{args.name}: counts and classes as published; every listed file is present")
    return 0


def _add_list(sub: Subparsers) -> None:
    ls = sub.add_parser("list", help="list registered datasets, backbones or strategies")
    ls.add_argument("what", choices=["datasets", "backbones", "strategies"])
    ls.add_argument("--family", choices=["supervised", "ssl", "contrastive", "untrained"])
    ls.add_argument(
        "--available", action="store_true", help="only backbones whose weights are here"
    )
    ls.add_argument(
        "--suite", type=Path, help="also the datasets and backbones this suite file declares"
    )
    ls.set_defaults(run=_list)


def _add_weights(sub: Subparsers) -> None:
    weights = sub.add_parser("weights", help="backbone weights")
    weights_sub = weights.add_subparsers(dest="action", required=True)
    for action, text in [
        ("fetch", "download weights into the Hugging Face cache (needs the network)"),
        ("verify", "re-hash the weights on this machine and compare with the expected sha256"),
    ]:
        w = weights_sub.add_parser(action, help=text)
        w.add_argument("names", nargs="+", help="backbone names, or suite names or files")
        w.add_argument("--suites-dir", type=Path, default=Path("suites"))
        w.set_defaults(run=_weights)


def _add_data(sub: Subparsers) -> None:
    data = sub.add_parser("data", help="dataset files")
    data_sub = data.add_subparsers(dest="action", required=True)
    fetch = data_sub.add_parser("fetch", help="download and verify a dataset")
    fetch.add_argument("name")
    fetch.add_argument("--root", type=Path, help="target directory (default: the cache)")
    fetch.set_defaults(run=_fetch)
    check = data_sub.add_parser("verify", help="check a dataset's counts, classes and files")
    check.add_argument("name")
    check.add_argument("--root", type=Path, help="the folder holding NAME/ (default: search)")
    check.set_defaults(run=_verify_data)


def add(sub: Subparsers) -> None:
    _add_list(sub)
    _add_weights(sub)
    _add_data(sub)
