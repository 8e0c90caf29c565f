"""A real headless Chromium (Debian's, driven by Playwright) on the session stack's console."""

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.conftest import Stack

# Playwright cannot download its own browser here: it drives the system's. The network
# flags keep Chromium from reaching for Google's hosts, which a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "the browser tests need Debian's chromium (make test-servers installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser, stack: Stack) -> Iterator[BrowserContext]:
    # Light theme and a laptop-sized window: what the README's screenshots show.
    context = browser.new_context(base_url=stack.url, color_scheme="light",
                                  viewport={"width": 1366, "height": 900}, accept_downloads=True)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    # A script error or a CSP refusal is a broken console, even where the asserts passed.
    assert not [e for e in errors if "status of 4" not in e], errors
