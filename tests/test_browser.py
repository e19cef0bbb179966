"""The HTML report as a reviewer opens it, in a real browser (Debian's Chromium, driven by
Playwright, at a laptop's 1,280 px): the verdict comes first and names every failed cell,
no script error occurs, every image loads, and nothing but a table's own frame scrolls
sideways. A screenshot of each page is kept (``$SHELFBENCH_SCREENSHOTS``, CI's artifact
folder, else the test's temporary directory)."""

import os
import shutil
from pathlib import Path

import pytest
import timm  # noqa: F401  (see test_plugin.py: keep extension modules loaded once)

playwright = pytest.importorskip("playwright.sync_api", reason="pip install 'shelfbench[browser]'")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[1]
SMOKE = (ROOT / "suites" / "smoke.toml").read_text()
TINY = (ROOT / "fixtures" / "suites" / "tiny.toml").read_text()
FLOOR = (
    '\n[floors."synthetic-products/test-efficientnet/knn"]\n'
    'accuracy = { floor = 0.99, measured = 0.99, date = "2026-12-04", machine = "test" }\n'
)
# The flags a sandboxed, offline machine needs (no network, no GPU, root).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def opened(page_path: Path, screenshot: Path) -> dict:
    """What the browser saw of the page: the order of its sections, the verdict's text,
    script errors, images that did not load, and how wide the page is."""
    seen: dict = {"errors": []}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.goto(page_path.as_uri(), wait_until="load")
        seen["headings"] = page.eval_on_selector_all("h1, h2", "hs => hs.map(h => h.innerText)")
        seen["verdict"] = page.evaluate(
            "() => { const h = [...document.querySelectorAll('h2')].find("
            "x => x.innerText === 'Verdict'); let t = '', n = h && h.nextElementSibling;"
            " while (n && n.tagName !== 'H2') {"
            " t += n.innerText + '\\n'; n = n.nextElementSibling; } return t; }"
        )
        seen["broken_images"] = page.eval_on_selector_all(
            "img", "is => is.filter(i => !i.complete || i.naturalWidth === 0).length"
        )
        seen["images"] = page.eval_on_selector_all("img", "is => is.length")
        seen["page_width"] = page.evaluate("() => document.documentElement.scrollWidth")
        seen["above_fold"] = page.evaluate(
            "() => [...document.querySelectorAll('h1, h2, p, li')].filter("
            "e => e.getBoundingClientRect().top < innerHeight).map(e => e.innerText)"
        )
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return seen


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SHELFBENCH_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize(
    ("name", "suite", "failed"),
    [
        ("smoke", SMOKE, None),
        ("failing", TINY + FLOOR, "synthetic-products/test-efficientnet/knn"),
    ],
)
def test_a_reviewer_sees_the_verdict_first_in_a_page_that_fits_a_laptop(
    pytester, write_suite, tmp_path, name, suite, failed
):
    write_suite(suite)
    pytester.runpytest()
    shot = screenshots(tmp_path) / f"report-{name}.png"
    seen = opened(pytester.path / "reports" / "latest.html", shot)
    assert seen["headings"][:3] == ["shelfbench results", "Verdict", "Recommendation"]
    assert seen["headings"][-1] == "Provenance" or "Provenance" not in seen["headings"]
    verdict = seen["verdict"]
    assert verdict.startswith("FAILED" if failed else "PASSED"), verdict
    if failed:
        assert f"failed {failed}: accuracy = " in verdict and "below its floor" in verdict
    assert any(line.startswith(("PASSED", "FAILED")) for line in seen["above_fold"])
    assert seen["errors"] == []
    assert seen["images"] > 0 and seen["broken_images"] == 0
    assert seen["page_width"] <= 1280, "the page scrolls sideways outside a table's frame"
    assert shot.stat().st_size > 0
