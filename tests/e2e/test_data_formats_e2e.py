"""The data formats people bring, each uploaded (and named by the upload check) and trained
through the API: ShareGPT rows, `content` as text parts, per-message `weight`, tool calls
with `tools`, and OpenAI's preference format for DPO. Each job must succeed with a falling
loss. Where a weight-0 turn's loss goes is measured in tests/unit/test_message_weights.py.
"""

from typing import Any

import pytest

from testbed.jobs import Project, wait_succeeded
from testbed.learning import bundled_instructions

LORA = {"type": "lora", "r": 16, "alpha": 32}


def _qa() -> list[tuple[str, str]]:
    return [(r["messages"][0]["content"], r["messages"][-1]["content"])
            for r in bundled_instructions()]


def sharegpt_rows() -> list[dict[str, Any]]:
    return [{"conversations": [{"from": "system", "value": "Answer briefly."},
                               {"from": "human", "value": q}, {"from": "gpt", "value": a}]}
            for q, a in _qa()]


def content_part_rows() -> list[dict[str, Any]]:
    return [{"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Question: "},
                                     {"type": "text", "text": q}]},
        {"role": "assistant", "content": [{"type": "text", "text": a}]}]} for q, a in _qa()]


def weighted_rows() -> list[dict[str, Any]]:
    # A wrong first answer kept as context (weight 0), then the right one (weight 1).
    return [{"messages": [
        {"role": "user", "content": q},
        {"role": "assistant", "content": "I do not know.", "weight": 0},
        {"role": "user", "content": "Please try again."},
        {"role": "assistant", "content": a, "weight": 1}]} for q, a in _qa()]


TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Look a fact up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"]}}}]


def tool_rows() -> list[dict[str, Any]]:
    return [{"tools": TOOLS, "messages": [
        {"role": "user", "content": q},
        {"role": "assistant", "tool_calls": [{"id": f"call_{i}", "type": "function",
                                              "function": {"name": "lookup",
                                                           "arguments": f'{{"query": "{q}"}}'}}]},
        {"role": "tool", "tool_call_id": f"call_{i}", "content": a},
        {"role": "assistant", "content": a}]} for i, (q, a) in enumerate(_qa())]


def openai_preference_rows() -> list[dict[str, Any]]:
    return [{"input": {"messages": [{"role": "user", "content": q}]},
             "preferred_output": [{"role": "assistant", "content": a}],
             "non_preferred_output": [{"role": "assistant", "content": "I cannot help."}]}
            for q, a in _qa()]


def _sft(n_epochs: int) -> dict[str, Any]:
    return {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": n_epochs, "batch_size": 8, "learning_rate": 5e-3}}}


CASES: dict[str, tuple[Any, str, dict[str, Any]]] = {
    # name: (rows, the format the upload names, method)
    "sharegpt": (sharegpt_rows, "sharegpt", _sft(8)),
    "content_parts": (content_part_rows, "messages", _sft(8)),
    "weights": (weighted_rows, "messages", _sft(8)),
    "tool_calls": (tool_rows, "messages", _sft(8)),
    "openai_dpo": (openai_preference_rows, "openai_preference", {
        "type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 4, "batch_size": 8,
                                                   "learning_rate": 5e-3}}}),
}


@pytest.fixture(scope="module")
def jobs(project: Project) -> dict[str, dict[str, Any]]:
    # Uploaded and created together, so the worker trains them back to back.
    out = {}
    for name, (rows, _, method) in CASES.items():
        upload = project.upload(rows(), f"{name}.jsonl")
        job = project.create_job({"model": "tiny-llama", "seed": 1, "training_file": upload["id"],
                                  "method": method, "tuning": LORA})
        out[name] = {"upload": upload, "job": job}
    return out


def _losses(project: Project, job_id: str) -> list[float]:
    """The loss of each logged step, by OpenAI's name (train_loss) or the trainer's (loss)."""
    losses = []
    for event in project.events(job_id):
        data = event["data"] or {}
        if event["type"] != "metrics" or "train_samples_per_second" in data:  # the summary
            continue
        loss = data.get("train_loss", data.get("loss"))
        if isinstance(loss, float):
            losses.append(loss)
    return losses


@pytest.mark.parametrize("name", list(CASES))
def test_format_is_named_at_upload_and_trains(project: Project, jobs: dict[str, Any],
                                              name: str) -> None:
    rows, expected_format, _ = CASES[name]
    upload = jobs[name]["upload"]
    assert upload["format"] == expected_format and upload["rows"] == len(rows())
    wait_succeeded(project, jobs[name]["job"]["id"], timeout=600)
    losses = _losses(project, jobs[name]["job"]["id"])
    assert len(losses) >= 4, losses
    k = max(1, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert last < 0.7 * first, (name, first, last, losses)


def test_a_stored_row_the_reader_refuses_fails_the_job_naming_its_line(stack, project: Project,  # type: ignore[no-untyped-def]
                                                                       ) -> None:
    # A file stored before the reader's limits (or changed on disk) is read by the worker
    # through the same reader as the upload: the job fails as bad data naming the line,
    # not as `internal`.
    upload = project.upload(bundled_instructions(), "later-broken.jsonl")
    stored = stack.home / "files" / f"{upload['id']}.jsonl"
    stored.write_bytes(stored.read_bytes() + b'\n{"text": "caf\\ud800"}\n')
    job = project.create_job({"model": "tiny-llama", "training_file": upload["id"],
                              "method": _sft(1), "tuning": LORA})
    done = project.wait(job["id"], timeout=300)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "invalid_data", done["error"]
    assert "line 17" in done["error"]["message"] and "surrogate" in done["error"]["message"]
    assert done["error"]["param"] == "training_file", done["error"]


def test_methods_list_the_formats_each_objective_reads(project: Project) -> None:
    objectives = {o["type"]: o for o in project.http.get("/v1/methods").json()["objectives"]}
    assert {"messages", "sharegpt"} <= set(objectives["supervised"]["data_formats"])
    assert {"preference", "openai_preference"} <= set(objectives["dpo"]["data_formats"])
    assert "openai_preference" in objectives["reward"]["data_formats"]
