"""Inference on a node of its own: the S3 stack of tests/faults/test_many_nodes.py (the API
and two workers, each with an empty home) plus `tunesmith inference` with an empty home too.

The fine-tuned model's adapter exists only in the store (the workers' scratch copies are
removed), so the inference process must fetch it: chat answers like the training data, the
fetched folder leaves the process's disk when the model leaves its memory, and a deleted
model is 404 everywhere and gone from the store.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from testbed.learning import bundled_instructions
from testbed.servers import Service, start_inference, wait_inference
from tests.conftest import LORA_SFT
from tests.faults.test_many_nodes import (  # noqa: F401 (the module's fixtures, reused)
    PREFIX,
    Nodes,
    nodes,
    outside_scratch,
)

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def inference(nodes: Nodes) -> Iterator[tuple[Service, Path]]:  # noqa: F811
    home = nodes.root / "home-inference"
    # A budget below one model: each model loaded evicts the one before (and its folder).
    service = start_inference({**nodes.env, "TUNESMITH_HOME": str(home),
                               "TUNESMITH_INFERENCE_MEMORY_BUDGET_MIB": "1"},
                              nodes.root / "inference.log")
    try:
        wait_inference(service, nodes.env)
        yield service, home
    finally:
        service.stop()


def ask(client: openai.OpenAI, model: str, question: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0,
        max_tokens=8)
    return (answer.choices[0].message.content or "").strip()


def fetched(home: Path) -> set[str]:
    """The job folders the inference process holds on its disk (`<job>/<folder>`)."""
    return {"/".join(p.parent.relative_to(home).parts[-3:])
            for p in home.rglob("adapter_config.json")}


def test_chat_with_a_model_only_in_the_store_then_delete_it(
        nodes: Nodes, inference: tuple[Service, Path]) -> None:  # noqa: F811
    _, home = inference
    project = nodes.project("inference")
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    job = project.create_job({**LORA_SFT, "training_file": upload["id"]})
    job = project.wait(job["id"], timeout=900)
    assert job["status"] == "succeeded", (job["error"], project.event_messages(job["id"])[-10:])
    for node in ("w1", "w2"):
        shutil.rmtree(nodes.homes[node] / "scratch" / "jobs" / job["id"], ignore_errors=True)
    name = job["fine_tuned_model"]
    client = openai.OpenAI(base_url=f"{nodes.url}/v1", api_key=project.key, max_retries=0,
                           timeout=300)
    assert name in [m.id for m in client.models.list()]

    rows = bundled_instructions()
    answers = [ask(client, name, r["messages"][0]["content"]) for r in rows]
    expected = [r["messages"][-1]["content"] for r in rows]
    assert sum(a == e for a, e in zip(answers, expected, strict=True)) >= 14, answers
    assert fetched(home) == {f"{job['id']}/artifacts/adapter"}

    # A checkpoint's adapter takes the only room: the final adapter leaves memory and disk.
    steps = [c["step_number"] for c in project.http.get(
        f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]]
    ask(client, f"{name}:ckpt-step-{max(steps)}", rows[0]["messages"][0]["content"])
    assert fetched(home) == {f"{job['id']}/listed_checkpoints/step-{max(steps)}"}
    stats: dict[str, Any] = httpx.get(f"{nodes.env['TUNESMITH_INFERENCE_URL']}/stats",
                                      timeout=30).json()
    assert stats["fetched_folders"] == 1 and stats["evictions"] >= 1, stats

    deleted = client.models.delete(name)
    assert deleted.deleted and deleted.id == name
    assert not nodes.store.keys(f"{PREFIX}/jobs/{job['id']}/artifacts/adapter")
    assert name not in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        ask(client, name, "Hi")
    with pytest.raises(openai.NotFoundError):
        client.models.delete(name)
    assert project.job(job["id"])["status"] == "succeeded"
    for node in ("api", "inference"):
        assert outside_scratch(nodes.root / f"home-{node}") == [], node
