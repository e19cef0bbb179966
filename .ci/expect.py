"""Run pytest and fail unless it ran the tests a CI step expects:

    python .ci/expect.py N PYTEST [ARGS...]

passes when pytest passes and exactly N tests ran (passed or failed; skipped and
deselected ones did not run), or at least N with ``N+``. pytest exits 0 when every cell
was skipped and 5 when it collected none: a step that judged nothing must not pass.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def ran(junit: Path) -> tuple[int, int]:
    """(tests that ran, tests skipped) in a junit XML report."""
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    skipped = [case.find("skipped") is not None for case in cases]
    return skipped.count(False), skipped.count(True)


def main(argv: list[str]) -> int:
    want, *command = argv
    expected = int(want.rstrip("+"))
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "junit.xml"
        code = subprocess.run([*command, f"--junitxml={junit}"]).returncode
        if code == 5 or not junit.exists():
            print(f"ci: no test ran; expected {want}: {' '.join(command)}")
            return 1
        count, skipped = ran(junit)
    ok = count >= expected if want.endswith("+") else count == expected
    print(f"ci: {count} tests ran, {skipped} skipped; expected {want}")
    return code or (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
