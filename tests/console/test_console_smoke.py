"""Quick: the console loads under its CSP and signs in."""

from playwright.sync_api import Page, expect

from tests.conftest import Stack
from tests.utils.jobs import Project


def test_sign_in(page: Page, stack: Stack, project: Project) -> None:
    page.goto("/console/")
    page.fill("#api-key", "not-a-key")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("Invalid or revoked API key")
    page.fill("#api-key", project.key)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Jobs")
    page.goto("/console/#/new")
    expect(page.locator("#job-json")).to_contain_text('"type": "lora"')
    page.screenshot(path="/tmp/console-new.png", full_page=True)
