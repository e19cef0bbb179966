"""The typed parts of a cell's row (``harness.row``): what its result cost, what an
approximate index did, the pictures the report shows, the images it could not read,
and the gate settings it was judged under. Plain dataclasses of plain values: they cross
processes and files as JSON, and are validated when a row is read back."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cost:
    """What the cell's result took to compute, cached or not: compute seconds per phase
    (embed, train, eval, total) as recorded when they ran, images embedded per second,
    forward GFLOPs per image, trainable parameters, estimated training GFLOPs, peak
    memory, the device and the exact ranking engine."""

    seconds: dict[str, float]
    images_per_second: float | None = None
    gflops_per_image: float | None = None
    trainable_params: int = 0
    train_gflops: float = 0.0
    peak_rss_mb: float | None = None
    peak_cuda_mb: float | None = None
    device: str = ""
    ranking: str = ""

    @property
    def total(self) -> float:
        return self.seconds.get("total", 0.0)


@dataclass(frozen=True)
class Loss:
    """Exact − index of one metric (positive where the index does worse), with its
    paired-bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class IndexReport:
    """What an approximate index did to a knn cell: its engine, spec and parameters, the
    neighbour recall at 10 and at the ranking's depth, what it cost, the exact metrics
    and each metric's loss against them, and the suite's tolerance."""

    engine: str
    spec: str
    search: dict[str, float | int | str | bool] = field(default_factory=dict)
    build: dict[str, float | int | str | bool] = field(default_factory=dict)
    neighbour_recall: dict[int, float] = field(default_factory=dict)  # by k
    build_seconds: float = 0.0
    memory_bytes: int | None = None
    query_ms_p50: float | None = None
    query_ms_p99: float | None = None
    qps: float | None = None
    exact_metrics: dict[str, float] = field(default_factory=dict)
    loss: dict[str, Loss] = field(default_factory=dict)
    max_index_loss: float | None = None

    @property
    def setting(self) -> str:
        return f"{self.engine}:{self.spec}"


@dataclass(frozen=True)
class Shown:
    """Queries a report pictures: dataset indices of each query and of its top five
    (-1: none), the rank of its first relevant neighbour, and which of the five are."""

    queries: list[int]
    first_hit: list[int]
    top5: list[list[int]]
    relevant: list[list[bool]]


@dataclass(frozen=True)
class Gallery:
    """A retrieval cell's seeded sample of queries and its worst-ranked ones."""

    sample: Shown
    worst: Shown


@dataclass(frozen=True)
class Changed:
    """Against a baseline or an incumbent (``against``): the queries whose first relevant
    neighbour moved most, as both runs ranked them."""

    against: str
    old: Shown
    new: Shown


@dataclass(frozen=True)
class Skipped:
    """Images left out as unreadable: how many per split, and a few of their paths."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(self.counts.values())


@dataclass(frozen=True)
class GateSettings:
    """The suite's ``[gate]`` the cell was judged under (``harness.suite.Gate``)."""

    resamples: int = 1000
    seed: int = 0
    max_drop: float = 0.01
    epsilon: float = 0.01
    unavailable: str = "auto"
