"""What every console test does first, and where its screenshots go."""

from pathlib import Path

from playwright.sync_api import Page, expect

SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"


def sign_in(page: Page, key: str, then: str = "#/jobs") -> None:
    page.goto("/console/")
    page.fill("#api-key", key)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Jobs")
    if then != "#/jobs":
        page.goto(f"/console/{then}")


def chart_points(page: Page, selector: str) -> int:
    return int(page.get_attribute(selector, "data-points") or 0)


def wait_for_points(page: Page, selector: str, more_than: int, timeout: float = 120) -> int:
    page.wait_for_function(
        "([selector, n]) => Number(document.querySelector(selector)?.dataset.points) > n",
        arg=[selector, more_than], timeout=timeout * 1000)
    return chart_points(page, selector)
