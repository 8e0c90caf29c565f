"""The playground answers one prompt with the base model and the fine-tuned one side by side:
greedily, the fine-tuned model gives the training answer and the base model does not."""

from typing import Any

from playwright.sync_api import Locator, Page, expect

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from tests.e2e.console.helpers import sign_in


def answer_of(page: Page, model: str) -> Locator:
    card = page.locator("section.card").filter(
        has=page.get_by_role("heading", name=model, exact=True))
    return card.locator(".answer")


def test_playground_answers_with_base_and_fine_tuned_side_by_side(
        page: Page, project: Project, lora_job: dict[str, Any]) -> None:
    row = bundled_instructions()[0]
    question, trained = row["messages"][0]["content"], row["messages"][-1]["content"]
    tuned = lora_job["fine_tuned_model"]
    sign_in(page, project.key, "#/playground")
    expect(page.locator("#playground-notice")).to_be_empty()
    # The succeeded job is offered as a choice for the fine-tuned model.
    expect(page.locator(f'#tuned-models option[value="{tuned}"]')).to_have_count(1)
    page.get_by_label("Base model").fill("tiny-llama")
    page.get_by_label("Fine-tuned model").fill(tuned)
    page.get_by_label("Prompt").fill(question)
    expect(page.get_by_label("Temperature")).to_have_value("0")
    page.get_by_role("button", name="Ask both").click()

    tuned_answer, base_answer = answer_of(page, tuned), answer_of(page, "tiny-llama")
    expect(tuned_answer).to_have_text(trained, timeout=120_000)
    expect(base_answer).to_be_visible(timeout=120_000)
    assert base_answer.inner_text().strip() != trained
    assert page.locator(".columns [role=alert]").count() == 0
