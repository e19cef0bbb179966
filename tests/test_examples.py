"""examples/github-actions.yml cannot rot: its set-up step is the README's, its cache is
the one shelfbench writes, and its gate and baseline steps run here as written (on the
tiny suite), filling the job's summary page."""

import json
import os
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
WORKFLOW = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text())
STEPS = {step.get("name", step.get("uses")): step for step in WORKFLOW["jobs"]["gate"]["steps"]}


def test_set_up_is_the_readmes_and_the_cache_is_shelfbenchs():
    readme = (ROOT / "README.md").read_text()
    (main_command,) = re.findall(r"^apt-get update .*pytest suites/$", readme, re.M)
    commands = [c.strip().removeprefix("sudo ") for c in STEPS["set up"]["run"].split("&&")]
    commands = [c for line in commands for c in line.splitlines() if c.strip()]
    assert " && ".join(c.strip() for c in commands) in main_command
    cache = STEPS["actions/cache@v4"]["with"]
    assert cache["path"] == WORKFLOW["env"]["SHELFBENCH_CACHE"]
    assert WORKFLOW["env"]["HF_HUB_OFFLINE"] == "1"


def run_step(name: str, workspace: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-c", STEPS[name]["run"]],
        cwd=workspace,
        env={**os.environ, **WORKFLOW["env"], **env},
        capture_output=True,
        text=True,
    )


def test_the_baseline_and_gate_steps_run_as_written(tmp_path):
    workspace = tmp_path / "repo"
    (workspace / "suites").mkdir(parents=True)
    (workspace / ".venv").symlink_to(ROOT / ".venv")
    (workspace / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    tiny = (ROOT / "fixtures" / "suites" / "tiny.toml").read_text()
    (workspace / "suites" / "suite.toml").write_text(tiny)
    summary = tmp_path / "summary.md"
    env = {"BASELINE": "baseline.json", "GITHUB_STEP_SUMMARY": str(summary)}
    env["SHELFBENCH_CACHE"] = str(tmp_path / "cache")
    refresh = run_step("refresh the baseline", workspace, env)
    assert refresh.returncode == 0, refresh.stdout[-2000:]
    assert json.loads((workspace / "baseline.json").read_text())["schema"] == 2
    gate = run_step("gate", workspace, env)
    assert gate.returncode == 0, gate.stdout[-2000:]
    page = summary.read_text()
    assert page.count("## shelfbench") == 2 and "vs baseline" in page
    assert "| synthetic-products/test-efficientnet/knn" in page
    rows = json.loads((workspace / "reports" / "latest.json").read_text())["cells"]
    assert {row["result_cache"] for row in rows} == {"hit"}  # the cache the job keeps
