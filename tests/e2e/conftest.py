"""Browser tests: Playwright (the PyPI package) driving the system's Chromium against real
`polchain node` processes. Playwright cannot download a browser here, so it is pointed at
Debian's `chromium` (`apt-get install -y chromium`; or POLCHAIN_CHROMIUM=/path/to/chrome).
Without Playwright or a browser the tests skip and say which is missing."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.nodeproc import NodeProc
from tests.chain_spec import TINY_TEST_ARGS

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    env = os.environ.get("POLCHAIN_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[dev]')")
    path = find_browser()
    if path is None:
        pytest.skip("no Chromium found: apt-get install -y chromium (or set POLCHAIN_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def mining_node(tmp_path_factory):
    node = NodeProc(tmp_path_factory.mktemp("e2e") / "miner", "--mine", *TINY_TEST_ARGS).start()
    node.wait_height(2, timeout=180)
    yield node
    node.stop()
