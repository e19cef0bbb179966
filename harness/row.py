"""A cell's row: one typed record, from the cell's result through the plugin and the
outcome cache to every report, the baseline gate, MLflow and the history.

A row crosses processes (pytest-xdist) and files as JSON (``to_json``/``from_json``);
``SCHEMA`` is the version of that JSON, written into every report. ``from_json``
validates a row as it reads it back, upgrading one written in an older schema, and
gives the fields it lacks their defaults.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from math import nan
from typing import TYPE_CHECKING, Any

from harness.errors import ShelfbenchError
from harness.metrics import METRICS
from harness.records import Changed, Cost, Gallery, GateSettings, IndexReport, Skipped

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from harness.suite import Cell

# 1: sub-records as free dicts, rows keyed by cell id; 2: typed sub-records, node ids.
SCHEMA = 2


class RowError(ShelfbenchError):
    """A row read back that is not one."""


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of one metric of a cell (``cell``) with a reference run of it
    (``against``: a baseline's, or its [upgrade] incumbent's cell): both values, the
    difference new − old with its 95% interval, and the drop tolerated."""

    cell: str
    metric: str
    old: float
    new: float
    diff: float
    low: float
    high: float
    max_drop: float
    against: str = ""

    @property
    def _sign(self) -> int:
        """+1 where higher is better (every metric so far), -1 where lower is."""
        return 1 if METRICS.get(self.metric).higher_is_better else -1

    @property
    def verdict(self) -> str:
        worst, best = sorted((self._sign * self.low, self._sign * self.high))
        if best < 0:
            return "worse"
        if worst > 0:
            return "better"
        return "no significant change"

    @property
    def regression(self) -> bool:
        return self.verdict == "worse" and self._sign * self.diff < -self.max_drop

    def line(self) -> str:
        return (
            f"{self.metric}: {self.old:.4f} → {self.new:.4f}, difference {self.diff:+.4f} "
            f"(95% CI {self.low:+.4f} to {self.high:+.4f}), tolerance {self.max_drop:.4f}: "
            f"{self.verdict}"
        )


@dataclass
class CellRow:
    """Everything known of one cell in a run, in plain types: what it is, how it ended,
    what it measured (empty for a cell that did not run), and how it fared against a
    baseline or its [upgrade] incumbent."""

    id: str
    dataset: str = ""
    backbone: str = ""
    strategy: str = ""
    suite: str = ""
    node: str = ""  # pytest's node id, suites/a.toml::ID: unique in a run, unlike the id
    outcome: str = "passed"  # passed, failed, skipped, error
    message: str = ""  # why it did not pass
    metrics: dict[str, float] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)
    floors_precision: dict[str, str] = field(default_factory=dict)  # what each measured at
    seconds: dict[str, float] = field(default_factory=dict)  # this run's, per phase
    cache: str = ""  # the embeddings' cache: hit or miss
    n_train: int = 0
    n_test: int = 0
    dataset_fingerprint: str = ""
    weights_sha256: str = ""
    main_metric: str = ""
    chosen: dict[str, Any] = field(default_factory=dict)  # what the strategy chose
    preprocess: dict[str, Any] = field(default_factory=dict)  # Preprocess.as_dict()
    embedding_keys: dict[str, str] = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)
    gate: GateSettings = field(default_factory=GateSettings)
    protocol: str = ""
    test_items_sha256: str = ""
    items: dict[str, list[Any]] = field(default_factory=dict)  # per test item
    cost: Cost | None = None
    skipped: Skipped = field(default_factory=Skipped)  # unreadable images
    warnings: list[str] = field(default_factory=list)
    precision: str = ""
    index: IndexReport | None = None  # an approximate index's report
    gallery: Gallery | None = None
    result_cache: str = "miss"  # the outcome cache: hit (read) or miss (computed here)
    computed_seconds: dict[str, float] = field(default_factory=dict)  # when it was computed
    baseline: list[Comparison] = field(default_factory=list)  # against --shelf-baseline
    upgrade: list[Comparison] = field(default_factory=list)  # against its incumbent
    changed: Changed | None = None  # queries whose first hit moved

    def to_json(self) -> dict[str, Any]:
        """The row as JSON holds it; each comparison with its verdict, for readers of the
        report file."""
        data = asdict(self)
        for name in ("baseline", "upgrade"):
            for written, c in zip(data[name], getattr(self, name), strict=True):
                written.update(verdict=c.verdict, regression=c.regression)
        return data

    @classmethod
    def from_json(cls, data: Any, schema: int = SCHEMA) -> CellRow:
        """A row as ``to_json`` wrote it in ``schema`` (an older one is upgraded), checked."""
        from pydantic import ValidationError

        if not 1 <= schema <= SCHEMA:
            raise RowError(f"a row of schema {schema}; this shelfbench reads 1 to {SCHEMA}")
        if not isinstance(data, dict):
            raise RowError(f"a row is a JSON object, not {type(data).__name__}")
        try:
            return _adapter().validate_python(upgraded(data) if schema == 1 else data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(map(str, error["loc"]))
            raise RowError(f"row {data.get('id')!r}: {where}: {error['msg']}") from None

    def copy(self) -> CellRow:
        """A row of its own to add verdicts and warnings to (values shared otherwise)."""
        return replace(self, warnings=list(self.warnings))

    @property
    def key(self) -> str:
        """What names the row in a run: its node id (its cell id in reports older than
        node ids)."""
        return self.node or self.id

    @property
    def scored(self) -> bool:
        return bool(self.metrics)

    def below_floor(self, cell: Cell) -> list[str]:
        """One line per metric under its floor (a missing metric counts as under), saying
        when the floor's measurement ran at another precision than this run."""
        return [
            f"{f.metric} = {self.metrics.get(f.metric, nan):.4f} is below its floor "
            f"{f.floor:.4f} (measured {f.measured:.4f} on {f.date}{self._at(f.precision)}); "
            f"cell {self.id}, n_train={self.n_train}, n_test={self.n_test}"
            for f in cell.floors
            if not METRICS.get(f.metric).gain(f.floor, self.metrics.get(f.metric, nan)) >= 0
        ]

    def _at(self, measured: str) -> str:
        """`` at fp32; this run: bf16`` where a floor was measured at another precision."""
        return (
            f" at {measured}; this run: {self.precision}"
            if measured not in ("", self.precision)
            else ""
        )

    def index_loss(self) -> Comparison | None:
        """The main metric under the index against exact search (paired bootstrap), with
        the suite's ``max_index_loss`` as its tolerance; None for exact search."""
        if self.index is None:
            return None
        loss = self.index.loss[self.main_metric]
        tolerance = self.index.max_index_loss
        return Comparison(
            self.id,
            self.main_metric,
            self.index.exact_metrics[self.main_metric],
            self.metrics[self.main_metric],
            -loss.value,
            -loss.high,
            -loss.low,
            float("inf") if tolerance is None else tolerance,
        )


@functools.cache
def _adapter() -> TypeAdapter[CellRow]:
    from pydantic import TypeAdapter

    return TypeAdapter(CellRow)


def upgraded(row: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 row (sub-records as free dicts, ``{}`` for none) in schema 2."""
    out = dict(row)
    for name in ("cost", "index", "gallery", "changed"):
        if not out.get(name):
            out.pop(name, None)
    if index := out.get("index"):
        recall = {
            key.rpartition("@")[2]: value
            for key, value in index.items()
            if key.startswith("neighbour_recall@")
        }
        out["index"] = {**index, "neighbour_recall": recall}
    if isinstance(skipped := out.get("skipped"), dict):
        counts = {k: v for k, v in skipped.items() if k != "examples"}
        out["skipped"] = {"counts": counts, "examples": skipped.get("examples", [])}
    for name in ("baseline", "upgrade"):
        out[name] = [
            {"cell": out.get("id"), **c, "against": c.get("incumbent", "")}
            if isinstance(c, dict)
            else c
            for c in out.get(name) or []
        ]
    return out
