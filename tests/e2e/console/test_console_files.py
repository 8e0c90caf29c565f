"""Files page: a bad upload lists every bad line by its number; a good one fills the progress
bar and shows a preview of its first rows with token counts from the model's tokenizer."""

import json

from playwright.sync_api import Page, expect
from tokenizers import Tokenizer

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from tests.conftest import Stack
from tests.e2e.console.helpers import sign_in


def test_dropped_file_with_bad_lines_shows_their_numbers(page: Page, project: Project) -> None:
    rows = [json.dumps(r) for r in bundled_instructions()[:4]]
    rows[1] = '{"messages": [ oops'
    rows[3] = '{"unknown": "shape"}'
    sign_in(page, project.key, "#/files")
    # Dropped on the drop zone, as a person drags it from their files.
    dropped = page.evaluate_handle("""(text) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([text], "bad.jsonl", {type: "application/jsonl"}));
        return transfer;
    }""", "\n".join(rows) + "\n")
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    expect(page.locator("#bad-lines li")).to_have_count(2)
    expect(page.locator("#bad-lines li[data-line='2']")).to_contain_text("Line 2")
    expect(page.locator("#bad-lines li[data-line='4']")).to_contain_text("Line 4")
    expect(page.locator("#upload-result [role=alert]")).to_contain_text("bad.jsonl")


def test_upload_then_preview_counts_tokens(page: Page, stack: Stack, project: Project,
                                           tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = bundled_instructions()[:12]
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sign_in(page, project.key, "#/files")
    page.fill("#preview-model", "tiny-llama")
    page.set_input_files("#file-input", str(good))
    expect(page.locator("#upload-result")).to_contain_text("12 rows")
    assert page.eval_on_selector("#upload-progress", "p => p.value") == 1
    cells = page.locator("#preview tbody tr")
    expect(cells).to_have_count(10)
    # The first row's count is the tokenizer's own count of the row's text.
    tokenizer = Tokenizer.from_file(str(stack.tiny_model / "tokenizer.json"))
    text = "\n".join(m["content"] for m in rows[0]["messages"])
    expected = len(tokenizer.encode(text, add_special_tokens=False).ids)
    first = cells.nth(0).locator("td")
    expect(first.nth(0)).to_have_text("1")
    expect(first.nth(1)).to_have_text(str(expected))
