"""Headless Chromium for the dashboard tests: ``browse(url) -> Page`` (the DOM after the scripts ran,
and a screenshot).

Chromium is the Debian package ``chromium``. Without it the tests are skipped, or fail
when ``CI`` is set, so that CI never passes without having drawn the page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL = "apt-get update && apt-get install -y chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900", "--virtual-time-budget=5000",
]


@dataclass
class Page:
    dom: str
    screenshot: Path

    def section(self, name: str) -> str:
        """The HTML of ``<section id=name>``."""
        match = re.search(rf'<section[^>]* id="{name}"[^>]*>.*?</section>', self.dom, re.S)
        assert match, f"no section {name!r} in the page:\n{self.dom[:3000]}"
        return match.group(0)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = f"chromium is not installed; to run the dashboard tests: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def browse(chromium, tmp_path):
    """``browse(url, name="dashboard") -> Page``: load ``url``, let its scripts and fetches run, then dump
    the DOM and save ``tmp_path / f"{name}.png"`` (1280x900)."""

    def load(url: str, name: str = "dashboard") -> Page:
        shot = tmp_path / f"{name}.png"
        command = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
                   f"--screenshot={shot}", "--dump-dom", url]
        done = subprocess.run(command, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
        return Page(done.stdout.decode(), shot)

    return load
