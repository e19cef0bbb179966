"""Same inputs, same numbers: the smoke suite (which trains MLP heads, fine-tunes,
cross-tunes and climbs the adaptive ladder) gives identical metrics run serially and
under pytest-xdist with two workers, each from its own cold cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def smoke_metrics(tmp_path: Path, *args: str) -> dict[str, dict[str, float]]:
    reports = tmp_path / "reports"
    env = {**os.environ, "SHELFBENCH_CACHE": str(tmp_path / "cache")}
    env.pop("SHELFBENCH_THREADS", None)
    command = [sys.executable, "-m", "pytest", "suites/smoke.toml", "-q"]
    run = subprocess.run(
        [*command, "-p", "no:cacheprovider", "--shelf-reports", str(reports), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    cells = json.loads((reports / "latest.json").read_text())["cells"]
    return {cell["id"]: cell["metrics"] for cell in cells}


def test_serial_and_two_workers_give_identical_metrics(tmp_path):
    serial = smoke_metrics(tmp_path / "serial")
    parallel = smoke_metrics(tmp_path / "xdist", "-n", "2", "-p", "xdist")
    assert len(serial) == 13 and serial == parallel
