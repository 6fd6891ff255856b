"""The report page in headless chromium: loads without errors, plots render, the tree viewer works.

Skipped when no chromium binary is installed (CI installs one with ``.ci/install_browser.sh``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from pipelines.report import DATASET_PANELS, SECTIONS, write_report
from tests.browser.cdp import Chromium, find_chromium
from tests.report_fixtures import add_big_tree, make_run

BIG_TREE_NODES = 3000
SCREENSHOT_COPY = Path(__file__).resolve().parent.parent / "benchmarks" / "out" / "report_screenshot.png"

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="no chromium on PATH: install it with .ci/install_browser.sh "
                                       "(apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    """The page's URL and the depth of the big tree's solution."""
    root = tmp_path_factory.mktemp("data")
    run_id = make_run(root)
    _, depth = add_big_tree(root, run_id, BIG_TREE_NODES)
    return write_report(root, run_id).as_uri(), depth


@pytest.fixture
def browser(tmp_path: Path):
    with Chromium.launch(tmp_path / "profile") as b:
        yield b


def _count(browser: Chromium, session: str, selector: str) -> int:
    return browser.evaluate(session, f"document.querySelectorAll({selector!r}).length")


def _wait_count(browser: Chromium, session: str, selector: str, at_least: int = 1) -> int:
    deadline = time.monotonic() + 10
    while (n := _count(browser, session, selector)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def test_page_loads_plots_render_and_a_click_shows_the_tree(browser, report, tmp_path):
    page = browser.new_page()
    browser.navigate(page, report[0])
    sizes = browser.evaluate(page, "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == len(SECTIONS) + len(DATASET_PANELS) and all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes
    assert _count(browser, page, "#tree-panel .node") == 0

    browser.click(page, ".problem")
    assert _wait_count(browser, page, "#tree-panel .node") > 1
    assert browser.evaluate(page, "document.querySelector('#tree-panel .question').textContent").startswith(
        browser.evaluate(page, "document.querySelector('.problem .q').textContent")[:20])
    browser.click(page, "#tree-panel .paths button")  # the first solution: its path is opened and marked
    assert _wait_count(browser, page, ".row.hl") >= 2

    assert browser.errors() == []
    browser.evaluate(page, "document.getElementById('viewer').scrollIntoView()")
    shot = browser.screenshot(page, tmp_path / "report_screenshot.png")
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    print(f"\nscreenshot: {shot}\nscreenshot copy: {SCREENSHOT_COPY}")


def test_a_tree_of_thousands_of_nodes_opens_lazily_and_reveals_a_deep_path(browser, report):
    url, depth = report
    page = browser.new_page()
    browser.navigate(page, url)
    browser.evaluate(page, "(() => { const f = document.getElementById('problem-filter'); f.value = 'big tree';"
                           "f.dispatchEvent(new Event('input')); })()")
    assert _count(browser, page, "#problem-list > li:not([hidden])") == 1
    start = time.perf_counter()
    browser.click(page, "#problem-list > li:not([hidden]) .problem")
    shown = _wait_count(browser, page, "#tree-panel .node")
    opened_s = time.perf_counter() - start
    assert 1 < shown < BIG_TREE_NODES // 4  # only the first levels are in the DOM
    assert _count(browser, page, "#tree-panel .more") >= 1  # wide levels wait behind "show more"

    browser.click(page, "#tree-panel .paths button")  # the solution ends at the last, deepest node
    marked = _wait_count(browser, page, ".row.hl")
    nested = browser.evaluate(page, "(() => { let d = 0, e = [...document.querySelectorAll('.row.hl')].pop();"
                                    "while ((e = e.parentElement.closest('.node'))) d++; return d; })()")
    assert marked == depth == nested - 1  # every step of the path is marked; nested counts the root too
    assert browser.errors() == []
    print(f"\n{BIG_TREE_NODES}-node tree: {shown} nodes rendered on open, in {opened_s * 1000:.0f} ms "
          f"(click to DOM, through the protocol)")
