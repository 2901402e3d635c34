"""Headless Chromium for the dashboard tests: ``browse(url) -> Page``, the DOM once the page has
drawn its data (polled, never a fixed wait), and a screenshot.

``tests/browser.py`` drives Chromium; without it the tests are skipped, or fail in CI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser import Browser, chromium_path

#: The page has had its first answers and drawn them (dashboard.js sets it after each refresh).
DRAWN = "document.body.dataset.state === 'ready'"


@dataclass
class Page:
    dom: str
    screenshot: Path
    status: int
    requested: list[str]

    def section(self, name: str) -> str:
        return section(self.dom, name)


def section(dom: str, name: str) -> str:
    """The HTML of ``<section id=name>``."""
    match = re.search(rf'<section[^>]* id="{name}"[^>]*>.*?</section>', dom, re.S)
    assert match, f"no section {name!r} in the page:\n{dom[:3000]}"
    return match.group(0)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(chromium_path(), tmp_path_factory.mktemp("chromium")) as browser:
        yield browser


@pytest.fixture
def browse(browser, tmp_path):
    """``browse(url, name="dashboard", ready=DRAWN) -> Page``: open ``url``, wait for its answer and
    until the JavaScript expression ``ready`` holds (at most 15 s; None: do not wait), then take the
    DOM and ``tmp_path / f"{name}.png"`` (1280x900). No page may ask for anything outside this machine."""

    def load(url: str, name: str = "dashboard", ready: str | None = DRAWN) -> Page:
        tab = browser.open(url)
        status = tab.document()["status"]
        if ready is not None:
            tab.wait_for(ready)
        page = Page(tab.dom(), tab.screenshot(tmp_path / f"{name}.png"), status, tab.requested)
        assert not browser.outside, f"the page asked for something outside this machine: {browser.outside}"
        return page

    return load
