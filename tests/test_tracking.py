"""--shelf-mlflow: one MLflow run per cell under a parent run with the HTML report, read
back with plain mlflow.search_runs from the default store; an unreachable server is one
line before any cell runs."""

import time
from pathlib import Path

import pytest
import timm  # noqa: F401  (loaded once: pytester's in-process runs drop extension modules)

from harness.runtime import resolve_precision

pytest_plugins = ["pytester"]
mlflow = pytest.importorskip("mlflow", reason="pip install 'shelfbench[mlflow]'")
# Loaded here, once: pytester's in-process run drops what it imported, and a second import
# of SQLAlchemy's compiled parts breaks them.
pytest.importorskip("mlflow.store.tracking.sqlalchemy_store")

TINY = (Path(__file__).parents[1] / "fixtures" / "suites" / "tiny.toml").read_text()


def test_each_cell_is_an_mlflow_run_and_the_report_an_artifact(pytester, write_suite):
    write_suite(TINY)
    result = pytester.runpytest("--shelf-mlflow")
    result.assert_outcomes(passed=2)
    uri = "sqlite:///mlflow.db"
    result.stdout.fnmatch_lines([f"logged to MLflow at {uri}: run * (experiment 'shelfbench')"])
    mlflow.set_tracking_uri(f"sqlite:///{pytester.path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["shelfbench"])
    cells = runs[runs["tags.kind"] == "shelfbench-cell"].set_index("params.cell")
    knn = cells.loc["synthetic-products/test-efficientnet/knn"]
    assert knn["params.backbone"] == "test-efficientnet"
    assert knn["params.precision"] == resolve_precision("auto")  # what ran on this machine
    assert knn["tags.outcome"] == "passed" and len(knn["params.weights_sha256"]) > 0
    assert knn["metrics.accuracy.low"] <= knn["metrics.accuracy"] <= knn["metrics.accuracy.high"]
    assert "metrics.recall_at_1" in runs and knn["metrics.cost.total_seconds"] > 0
    (parent,) = runs[runs["tags.kind"] == "shelfbench-run"]["run_id"]
    assert set(cells["tags.mlflow.parentRunId"]) == {parent}
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(parent)]
    assert artifacts == ["latest.html"]


def test_a_tracking_uri_mlflow_cannot_use_is_one_line(pytester, write_suite):
    write_suite(TINY)
    result = pytester.runpytest("--shelf-mlflow=nosuchscheme://host", "-k", "knn")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["shelfbench: error: logging to MLflow at nosuchscheme://host failed: *"]
    )


@pytest.mark.parametrize("also", [[], ["--shelf-update-baseline"]])
def test_a_server_that_does_not_answer_fails_before_any_cell_runs(pytester, write_suite, also):
    write_suite(TINY)
    start = time.perf_counter()
    result = pytester.runpytest_subprocess("--shelf-mlflow=http://127.0.0.1:9", *also)
    assert time.perf_counter() - start < 60
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if "shelfbench" in line]
    assert errors == [
        "ERROR: shelfbench: --shelf-mlflow=http://127.0.0.1:9: no MLflow server answers "
        "there ([Errno 111] Connection refused); start it, or leave out the URI to log to "
        "sqlite:///mlflow.db"
    ]
    assert "Traceback" not in result.stderr.str() and not (pytester.path / "reports").exists()
