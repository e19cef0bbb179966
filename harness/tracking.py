"""Results where teams already look: one MLflow run per cell, under a parent run that holds
the HTML report (``pytest --shelf-mlflow [URI]``; mlflow is imported only then).

The default store is ``sqlite:///mlflow.db``: a database MLflow supports and reads back
with plain ``mlflow.search_runs`` (MLflow 3 keeps its file store in maintenance mode).
A server is checked once before any cell runs, and MLflow's own retries are bounded, so
an unreachable one is one line at the start, not minutes of retries at the end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.errors import ShelfbenchError
from harness.row import CellRow

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow's HTTP retries and timeout (seconds), unless the environment sets them.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
EXPERIMENT = "shelfbench"


def tracking_uri(uri: str) -> str:
    """``uri`` as MLflow takes it: a plain path becomes a ``file:`` store, which MLflow 3
    refuses unless told otherwise; a user who names one gets it (a database or server URI
    is used as given)."""
    store = uri if "://" in uri or uri.startswith("file:") else Path(uri).resolve().as_uri()
    if store.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return store


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail in one line, before any cell runs, when the tracking store cannot be used:
    mlflow (or the database driver a ``sqlite:`` store needs) is not installed, or an
    ``http(s)://`` server does not answer its ``/health`` endpoint."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise ShelfbenchError("--shelf-mlflow needs mlflow: pip install 'shelfbench[mlflow]'")
    if uri.startswith("sqlite:") and importlib.util.find_spec("sqlalchemy") is None:
        raise ShelfbenchError(
            f"--shelf-mlflow={uri} needs SQLAlchemy: pip install 'shelfbench[mlflow]'"
        )
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as answer:
            answer.read(64)
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ShelfbenchError(
            f"--shelf-mlflow={uri}: no MLflow server answers there ({reason}); start it, or "
            "leave out the URI to log to sqlite:///mlflow.db"
        ) from None


def cell_params(row: CellRow) -> dict[str, Any]:
    """What identifies a cell's result: its parts, data, weights and how it ran."""
    preprocess = row.preprocess
    params: dict[str, Any] = {
        "cell": row.id,
        "node": row.node,
        "dataset": row.dataset,
        "backbone": row.backbone,
        "strategy": row.strategy,
        "suite": row.suite,
        "precision": row.precision,
        "weights_sha256": row.weights_sha256,
        "dataset_fingerprint": row.dataset_fingerprint,
        "n_train": row.n_train,
        "n_test": row.n_test,
        "image_size": preprocess.get("size", ""),
        "main_metric": row.main_metric,
    }
    if row.index is not None:
        params["index"] = row.index.setting
        params.update({f"index.{k}": v for k, v in row.index.search.items()})
    return params


def cell_metrics(row: CellRow) -> dict[str, float]:
    """Each metric with its interval bounds, and what the cell cost."""
    metrics: dict[str, float] = {}
    for name, value in row.metrics.items():
        metrics[name] = value
        if name in row.ci:
            metrics[f"{name}.low"], metrics[f"{name}.high"] = row.ci[name]
    if row.cost is not None:
        for phase, seconds in row.cost.seconds.items():
            metrics[f"cost.{phase}_seconds"] = seconds
        for key in ("gflops_per_image", "train_gflops", "trainable_params", "peak_rss_mb"):
            if (value := getattr(row.cost, key)) is not None:
                metrics[f"cost.{key}"] = value
    # MLflow metric names take letters, digits and _-./ and space: Recall@1 → recall_at_1
    return {k.replace("@", "_at_"): float(v) for k, v in metrics.items()}


def connect(uri: str) -> Any:
    """mlflow, pointed at ``uri`` with its HTTP retries and timeout bounded (unless the
    environment sets them)."""
    try:
        import mlflow
    except ImportError:
        raise ShelfbenchError(
            "--shelf-mlflow needs mlflow: pip install 'shelfbench[mlflow]'"
        ) from None
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(tracking_uri(uri))
    return mlflow


def log_run(uri: str, provenance: dict[str, Any], rows: list[CellRow], html: Path) -> str:
    """Log a parent run (provenance tags, the HTML report as an artifact) with one nested
    run per cell; return the parent run's id."""
    mlflow = connect(uri)
    mlflow.set_experiment(EXPERIMENT)
    commit = str(provenance.get("git_commit", ""))
    suites = sorted({str(row.suite) for row in rows})
    with mlflow.start_run(run_name=f"shelfbench {provenance['started']}") as parent:
        mlflow.set_tags({"suite": ",".join(suites), "git_commit": commit, "kind": "shelfbench-run"})
        mlflow.log_params({k: str(v)[:500] for k, v in provenance.items()})
        for row in rows:
            with mlflow.start_run(run_name=row.id, nested=True):
                mlflow.log_params(cell_params(row))
                mlflow.log_metrics(cell_metrics(row))
                mlflow.set_tags(
                    {
                        "outcome": row.outcome,
                        "suite": row.suite,
                        "git_commit": commit,
                        "kind": "shelfbench-cell",
                    }
                )
        mlflow.log_artifact(str(html))
        return parent.info.run_id
