"""The main command as a pull-request check: cold and warm, measured in one run.

    python benchmarks/warm_vs_cold.py [--default suites/default.toml] [--all suites/]

runs `pytest suites/default.toml` and `pytest suites/` (the README's main command), each
from an empty cache and then again warm on that cache, and prints one JSON line per run
and one with the ratios. Reports go to a scratch directory, never to reports/. The
hypothesis plugin (installed with the test extra only) is disabled, as in the main
command's environment. The machine should be otherwise idle. CI runs it at a toy size:
``--default suites/smoke.toml --all suites/smoke.toml``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "warm default / cold default": 0.05,
    "warm default s": 3.0,
    "warm suites/ s": 10.0,
    "cold suites/ s": 180.0,
}


def timed(paths: list[str], cache: Path, reports: Path) -> float:
    """Seconds one pytest run of ``paths`` takes, start to exit, with ``cache``."""
    env = {**os.environ, "SHELFBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        *paths,
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:hypothesispytest",
        f"--shelf-reports={reports}",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0,):
        sys.exit(f"{' '.join(paths)} exited {done.returncode}:\n{done.stdout[-2000:]}")
    return seconds


def machine() -> str:
    """The CPU model, its usable cores, whether it has AMX, and how many times fp32's rate
    it multiplies at in bf16 (what `precision = "auto"` decides by)."""
    from harness.runtime import bf16_speedup, cpu_flags

    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "")
    amx = "AMX" if "amx_bf16" in cpu_flags() else "no AMX"
    cores = len(os.sched_getaffinity(0))
    return f"{model or platform.machine()}, {cores} cores, {amx}, bf16 {bf16_speedup()}x fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", default="suites/default.toml", help="the one-suite run")
    parser.add_argument("--all", default="suites/", help="the main command's run")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        for name, paths in (("default", [args.default]), ("suites/", [args.all])):
            cache, reports = base / name.strip("/") / "cache", base / name.strip("/") / "reports"
            for state in ("cold", "warm"):
                figures[f"{state} {name} s"] = seconds = timed(paths, cache, reports)
                print(
                    json.dumps({"run": f"{state} pytest {' '.join(paths)}", "s": round(seconds, 2)})
                )
    figures["warm default / cold default"] = figures["warm default s"] / figures["cold default s"]
    met = {k: figures[k] <= v for k, v in TARGETS.items()}
    rounded = {k: round(v, 3) for k, v in figures.items()}
    print(json.dumps({"machine": machine(), "figures": rounded, "targets": TARGETS, "met": met}))


if __name__ == "__main__":
    main()
