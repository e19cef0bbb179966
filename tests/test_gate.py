"""Gating on a baseline: a real drop fails, a re-run with another seed passes, a baseline
from another test set is refused; `shelfbench compare` gives the same verdicts."""

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)
import torch  # noqa: F401

from harness import cell as cell_module
from harness.cli import main

pytest_plugins = ["pytester"]

SUITE = """
[suite]
name = "gate"

[profile]
image_size = 64

[gate]
resamples = 300
max_drop = 0.02

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-efficientnet"]
strategies = ["knn", "linear"]
"""


@pytest.fixture
def gate_suite(write_suite):
    write_suite(SUITE)
    return write_suite


def noisy(monkeypatch, scale):
    """Perturb every test embedding with Gaussian noise: a worse model, same test items."""
    real = cell_module.embed

    def embed(dataset, split, *args, **kwargs):
        got = real(dataset, split, *args, **kwargs)
        if split != "test":
            return got
        noise = np.random.default_rng(0).normal(size=got.vectors.shape).astype(np.float32)
        spread = got.vectors.std()
        return dataclasses.replace(got, vectors=got.vectors + scale * spread * noise)

    monkeypatch.setattr(cell_module, "embed", embed)


def test_a_real_drop_fails_the_gate_and_a_reseeded_run_passes(pytester, gate_suite, monkeypatch):
    baseline = pytester.path / "baseline.json"
    pytester.runpytest(
        "--shelf-baseline", str(baseline), "--shelf-update-baseline"
    ).assert_outcomes(passed=2)
    assert baseline.is_file() and (pytester.path / "baseline.items.npz").is_file()

    gate_suite(SUITE + "\n[strategy.linear]\nseed = 1\n")
    same = pytester.runpytest("--shelf-baseline", str(baseline))
    same.assert_outcomes(passed=2)
    cells = json.loads((pytester.path / "reports" / "latest.json").read_text())["cells"]
    assert all(c["baseline"] and c["baseline"][0]["verdict"] != "worse" for c in cells)

    noisy(monkeypatch, scale=3.0)
    worse = pytester.runpytest("--shelf-baseline", str(baseline), "-k", "knn")
    worse.assert_outcomes(failed=1, deselected=1)
    worse.stdout.fnmatch_lines(
        [
            "*regression against*baseline.json: mmp@5: 0.* → 0.*, "
            "difference -0.* (95% CI -0.* to -0.*), tolerance 0.0200: worse"
        ]
    )


def test_a_baseline_of_another_test_set_is_refused(pytester, gate_suite):
    baseline = pytester.path / "baseline.json"
    pytester.runpytest("--shelf-baseline", str(baseline), "--shelf-update-baseline")
    gate_suite(SUITE.replace("image_size = 64", "image_size = 64\nn_test = 50"))
    result = pytester.runpytest("--shelf-baseline", str(baseline))
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*another test_items_sha256*--shelf-update-baseline*"])


def test_report_keeps_intervals_history_html_and_junit_properties(pytester, gate_suite):
    result = pytester.runpytest("--junitxml", "junit.xml")
    result.assert_outcomes(passed=2)
    reports = pytester.path / "reports"
    cell = json.loads((reports / "latest.json").read_text())["cells"][0]
    low, high = cell["ci"]["accuracy"]
    assert low <= cell["metrics"]["accuracy"] <= high and "items" not in cell
    assert len(list((reports / "runs").glob("*/latest.json"))) == 1
    page = (reports / "latest.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "Recommendation" in page
    properties = {p.get("name") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert {"metric.accuracy", "metric.mmp@5"} <= properties


def test_compare_exits_nonzero_only_for_a_regression(pytester, gate_suite, monkeypatch, capsys):
    reports = pytester.path / "reports"
    pytester.runpytest("--shelf-reports", str(reports / "old"))
    gate_suite(SUITE + "\n[strategy.linear]\nseed = 1\n")
    pytester.runpytest("--shelf-reports", str(reports / "same"))
    noisy(monkeypatch, scale=3.0)
    gate_suite(SUITE.replace('strategies = ["knn", "linear"]', 'strategies = ["knn"]'))
    pytester.runpytest("--shelf-reports", str(reports / "worse"))
    capsys.readouterr()

    assert (
        main(["compare", str(reports / "old/latest.json"), str(reports / "same/latest.json")]) == 0
    )
    assert "0 beyond tolerance" in capsys.readouterr().out
    assert (
        main(["compare", str(reports / "old/latest.json"), str(reports / "worse/latest.json")]) == 1
    )
    out = capsys.readouterr().out
    assert (
        "worse (regression)" in out
        and "only in old: suite.toml::synthetic-products/test-efficientnet/linear" in out
    )


def test_a_missing_baseline_is_one_line_before_any_cell_runs(pytester, gate_suite):
    result = pytester.runpytest("--shelf-baseline", "nowhere.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: shelfbench: --shelf-baseline nowhere.json does not exist"])
    assert "Traceback" not in result.stderr.str() and not Path("reports").exists()
