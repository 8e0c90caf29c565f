"""A LoRA job made with the form, watched live, paused, resumed and cancelled from its page;
a finished job's adapter downloaded; two jobs' loss curves on one chart. The README's
screenshots are taken here."""

import hashlib
import re
import tarfile
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from testbed.jobs import Project, wait_succeeded
from testbed.learning import bundled_instructions
from tests.e2e.console.helpers import SCREENSHOTS, chart_points, sign_in, wait_for_points


@pytest.fixture(scope="module")
def file_id(project: Project) -> str:
    return project.upload(bundled_instructions(), "console.jsonl")["id"]


def short_job(project: Project, file_id: str, suffix: str, learning_rate: float) -> dict[str, Any]:
    return project.create_job({
        "model": "tiny-llama", "training_file": file_id, "suffix": suffix,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "batch_size": 4, "learning_rate": learning_rate, "max_steps": 4,
            "logging_steps": 1}}},
        "tuning": {"type": "lora", "r": 8, "alpha": 16}})


@pytest.fixture(scope="module")
def two_finished_jobs(project: Project, file_id: str) -> list[dict[str, Any]]:
    jobs = [short_job(project, file_id, "slow", 1e-3), short_job(project, file_id, "fast", 5e-3)]
    return [wait_succeeded(project, job["id"]) for job in jobs]


def test_lora_job_from_the_form_trains_live_and_pauses_resumes_cancels(
        page: Page, project: Project, file_id: str) -> None:
    sign_in(page, project.key, "#/new")
    page.select_option("#training-file", file_id)
    page.select_option("#tuning", "lora")
    page.fill("#suffix", "live")
    hyper = "#f-method-supervised-hyperparameters-"
    page.fill(hyper + "n_epochs", "50")  # long enough to pause on a quiet, fast machine
    page.fill(hyper + "batch_size", "1")
    page.fill(hyper + "learning_rate", "0.005")
    page.fill(hyper + "logging_steps", "1")
    page.fill("#f-tuning-r", "4")
    body = page.locator("#job-json")
    for shown in ('"n_epochs": 50', '"batch_size": 1', '"learning_rate": 0.005',
                  f'"training_file": "{file_id}"', '"type": "lora"', '"r": 4'):
        expect(body).to_contain_text(shown)
    expect(body).not_to_contain_text('"alpha"')  # defaults are not sent
    page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    page.screenshot(path=SCREENSHOTS / "new-job.png")
    page.click("#create-job")
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    job_id = page.url.rsplit("/", 1)[-1]
    job = project.job(job_id)
    assert job["tuning"]["type"] == "lora" and job["tuning"]["r"] == 4
    assert job["user_provided_suffix"] == "live"

    # The loss chart gains points while the job trains.
    first = wait_for_points(page, "#loss-chart", 2)
    later = wait_for_points(page, "#loss-chart", first + 2)
    assert chart_points(page, "#lr-chart") > 0
    expect(page.locator("#job-status")).to_have_text("running")
    page.wait_for_timeout(1500)  # a few more points for the picture
    page.screenshot(path=SCREENSHOTS / "job.png")

    page.click("#pause")
    expect(page.locator("#job-status")).to_have_text("paused", timeout=60_000)
    expect(page.locator("#resume")).to_be_enabled()
    paused_at = chart_points(page, "#loss-chart")
    assert paused_at >= later
    assert project.job(job_id)["status_detail"] == "paused"

    page.click("#resume")
    expect(page.locator("#job-status")).to_have_text(re.compile("queued|running"))
    # It continues from its checkpoint: the same chart, new points after the pause.
    wait_for_points(page, "#loss-chart", paused_at + 1)
    page.click("#cancel")
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=60_000)
    expect(page.locator("#events")).to_contain_text("Resuming from checkpoint")
    assert project.job(job_id)["status_detail"] == "cancelled"
    for button in ("#pause", "#resume", "#cancel"):
        expect(page.locator(button)).to_be_disabled()


def test_adapter_downloads_from_the_job_page(page: Page, project: Project, tmp_path,  # type: ignore[no-untyped-def]
                                             two_finished_jobs: list[dict[str, Any]]) -> None:
    job = two_finished_jobs[0]
    sign_in(page, project.key, f"#/jobs/{job['id']}")
    expect(page.locator("#job-status")).to_have_text("succeeded")
    checkpoints = page.locator("table", has_text="Checkpoints").locator("tbody tr")
    expect(checkpoints.first).to_contain_text(":ckpt-step-")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download adapter.tar.gz").click()
    archive = tmp_path / "adapter.tar.gz"
    download.value.save_as(archive)
    assert download.value.suggested_filename == "adapter.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= names
    # One file, byte for byte what the listing's sha256 says.
    listing = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]
    weights = next(a for a in listing if a["name"] == "adapter/adapter_model.safetensors")
    row = page.locator("#outputs tr", has_text="adapter/adapter_model.safetensors")
    with page.expect_download() as download:
        row.get_by_role("button", name="Download").click()
    saved = tmp_path / "weights.safetensors"
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == weights["sha256"]


def test_compare_puts_two_jobs_loss_curves_on_one_chart(
        page: Page, project: Project, two_finished_jobs: list[dict[str, Any]]) -> None:
    sign_in(page, project.key)
    for job in two_finished_jobs:  # tick both on the jobs page, then compare them
        page.check(f"tr[data-job='{job['id']}'] input[type=checkbox]")
    page.click("#compare-selected")
    chart = page.locator("#compare-chart")
    expected = sum(len(project.losses(job["id"])) for job in two_finished_jobs)
    expect(chart).to_have_attribute("data-points", str(expected))
    series = (chart.get_attribute("data-series") or "").split(",")
    for job in two_finished_jobs:
        assert any(s.startswith(job["id"]) for s in series), series
    expect(page.locator("table", has_text="Jobs compared").locator("tbody tr")).to_have_count(2)
    page.screenshot(path=SCREENSHOTS / "compare.png")
