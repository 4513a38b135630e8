"""A real Chromium (Debian's, never a browser Playwright downloads) driving the playground
on a live server.

``WORKSESSION_TEST_CHROMIUM`` names the browser. When it is set (CI sets it), a missing
browser or a missing Playwright is an error, never a skip: CI must not go green by testing
less. When it is not set, ``/usr/bin/chromium`` is used if it exists; otherwise the browser
tests are reported as skipped with the variable named.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realtime.conftest import Server, dedicated_server

CHROMIUM_ENV = "WORKSESSION_TEST_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
NEEDS_CHROMIUM = (
    f"needs Chromium at {DEFAULT_CHROMIUM} or {CHROMIUM_ENV} (apt-get install chromium; "
    "CI sets it) and Playwright for Python"
)
REPOSITORY = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPOSITORY / "docs" / "screenshots"
# Set to refresh docs/screenshots/ from a run; otherwise screenshots go to the test's tmp.
UPDATE_SCREENSHOTS_ENV = "WORKSESSION_UPDATE_SCREENSHOTS"


def chromium_path() -> str:
    required = os.environ.get(CHROMIUM_ENV)
    path = required or DEFAULT_CHROMIUM
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        if required:
            raise
        pytest.skip(NEEDS_CHROMIUM)
    if not Path(path).is_file():
        if required:
            pytest.fail(f"{CHROMIUM_ENV}={required}: no such file")
        pytest.skip(NEEDS_CHROMIUM)
    return path


@pytest.fixture(scope="module")
def playground_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the playground on, on SQLite (``make run``'s default): the browser
    tests check the page and the client, the backends are the realtime tests' job."""
    with dedicated_server("sqlite", tmp_path_factory.mktemp("playground"), playground="true") as (
        running
    ):
        yield running


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable,
            # Containers run as root, where Chromium's sandbox cannot start.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1500, "height": 1000})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        await context.close()
    assert not errors, errors


def screenshot_path(name: str, tmp_path: Path) -> Path:
    if os.environ.get(UPDATE_SCREENSHOTS_ENV):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS / name
    return tmp_path / name
