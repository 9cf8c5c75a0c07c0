"""A real headless Chromium for the page tests: Debian's `chromium` package driven by Playwright from PyPI, never a
browser downloaded at run time (`playwright install` is not used: the machines reach only the package registries).

`.ci/run` installs the package (apt-get install chromium) and sets GANSVC_REQUIRE_BROWSER=1, so in CI a missing
browser fails the tests instead of skipping them. Elsewhere they skip, saying what to install.
Screenshots go to the test output folder: $GANSVC_TEST_OUTPUT, default <repo>/test-output (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# flags for a root user on a closed network: no sandbox (root), and none of Chromium's own connections to Google's
# hosts (this machine refuses them, and a test must not depend on them)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def output_dir(name: str) -> Path:
    folder = Path(os.environ.get("GANSVC_TEST_OUTPUT") or REPO / "test-output") / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium_path() -> str | None:
    found = os.environ.get("GANSVC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return found if found and os.access(found, os.X_OK) else None


def _unavailable(reason: str) -> None:
    if os.environ.get("GANSVC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (GANSVC_REQUIRE_BROWSER=1: CI must run the browser tests)")
    pytest.skip(reason)


def browser() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright Browser) for a fixture to yield from; closed at the end."""
    exe = chromium_path()
    if exe is None:
        _unavailable(
            "no Chromium: install Debian's package (./dev browser, or apt-get install chromium) or set GANSVC_CHROMIUM"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: ./dev setup installs the test extras (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
