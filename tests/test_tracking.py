"""--shelf-mlflow: one MLflow run per cell under a parent run with the HTML report, read
back with mlflow.search_runs from a file store."""

from pathlib import Path

import pytest
import timm  # noqa: F401  (loaded once: pytester's in-process runs drop extension modules)

pytest_plugins = ["pytester"]
mlflow = pytest.importorskip("mlflow", reason="pip install 'shelfbench[mlflow]'")

TINY = (Path(__file__).parents[1] / "fixtures" / "suites" / "tiny.toml").read_text()


def test_each_cell_is_an_mlflow_run_and_the_report_an_artifact(pytester, write_suite):
    write_suite(TINY)
    store = pytester.path / "mlruns"
    result = pytester.runpytest(f"--shelf-mlflow={store}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"logged to MLflow at {store}: run * (experiment 'shelfbench')"])
    from harness.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(str(store)))
    runs = mlflow.search_runs(experiment_names=["shelfbench"])
    cells = runs[runs["tags.kind"] == "shelfbench-cell"].set_index("params.cell")
    knn = cells.loc["synthetic-products/test-efficientnet/knn"]
    assert knn["params.backbone"] == "test-efficientnet" and knn["params.precision"] == "fp32"
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
