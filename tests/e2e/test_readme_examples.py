"""Every JSON job example in README.md, POSTed as a user would after uploading their data:
each answers 200 and each job trains on the tiny model to `succeeded`.

The examples come from the README itself, so the two cannot drift. Placeholder ids
(`file-abc`, `ftjob-reward`, ...) are replaced by uploads of tiny data in the format the
method reads and by the README's own reward job; `max_steps` is set small, the one change
to the README's body (a user trying the examples would do the same)."""

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from testbed.jobs import Project
from testbed.learning import bundled_instructions

README = Path(__file__).resolve().parents[2] / "README.md"
STEPS = 2


def readme_job_examples(*, gptq: bool = False) -> list[dict[str, Any]]:
    """The job examples; those on a GPTQ checkpoint (`gptq=True`) are posted by
    tests/e2e/test_quantized_gptq.py, which makes the checkpoint they name."""
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(), flags=re.S)
    return [example for example in map(json.loads, blocks) if "model" in example
            and ((example.get("quantization") or {}).get("method") == "gptq") == gptq]


def _data_for(placeholder: str) -> list[dict[str, Any]]:
    """Rows in the format the README's example file name stands for."""
    rows = bundled_instructions()[:8]
    questions = [r["messages"][0]["content"] for r in rows]
    answers = [r["messages"][-1]["content"] for r in rows]
    if placeholder == "file-corpus":
        text = (resources.files("tunesmith") / "data" / "tiny_corpus.txt").read_text()
        return [{"text": p.strip()} for p in text.split("\n\n") if p.strip()]
    if placeholder == "file-prefs":
        return [{"prompt": q, "chosen": a, "rejected": "I do not know."}
                for q, a in zip(questions, answers, strict=True)]
    if placeholder == "file-prompts":
        return [{"prompt": q} for q in questions]
    if placeholder == "file-math":
        return [{"prompt": q, "answer": a} for q, a in zip(questions, answers, strict=True)]
    return rows  # file-abc, file-qa, file-copy, file-sft: chat rows


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return ids.get(value, value) if isinstance(value, str) else value


def _few_steps(example: dict[str, Any]) -> dict[str, Any]:
    """The example with `max_steps` in each of its method's hyperparameter blocks."""
    spec = json.loads(json.dumps(example))
    kind = spec["method"]["type"]
    config = spec["method"].setdefault(kind, {})
    if kind == "rlhf":
        for stage in ("sft", "reward"):
            config.setdefault(stage, {}).setdefault("hyperparameters", {})["max_steps"] = STEPS
        config.setdefault("ppo", {})["max_steps"] = STEPS
    else:
        config.setdefault("hyperparameters", {})["max_steps"] = STEPS
    return spec


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*map(_placeholders, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_placeholders, value)) if value else set()
    return {value} if isinstance(value, str) and value.startswith(("file-", "ftjob-")) else set()


@pytest.fixture(scope="module")
def posted(project: Project) -> list[dict[str, Any]]:
    """Each example's answer and finished job, in README order."""
    examples = readme_job_examples()
    ids = {name: project.upload(_data_for(name), f"{name}.jsonl")["id"]
           for example in examples for name in _placeholders(example)
           if name.startswith("file-")}
    results: list[dict[str, Any]] = [{"example": e} for e in examples]

    def post(result: dict[str, Any]) -> None:
        response = project.http.post("/v1/fine_tuning/jobs",
                                     json=_fill(_few_steps(result["example"]), ids))
        result["status_code"], result["body"] = response.status_code, response.json()

    # The PPO example names a reward job: the README's own reward example, once it is done.
    needs_reward = [r for r in results if "ftjob-reward" in _placeholders(r["example"])]
    for result in results:
        if not any(result is r for r in needs_reward):
            post(result)
    for result in results:
        if result.get("status_code") == 200 and result["example"]["method"]["type"] == "reward":
            ids["ftjob-reward"] = result["body"]["id"]
            project.wait(result["body"]["id"], timeout=600)
    for result in needs_reward:
        post(result)
    for result in results:
        if result["status_code"] == 200:
            result["job"] = project.wait(result["body"]["id"], timeout=600)
    return results


def _name(example: dict[str, Any]) -> str:
    return f"{example['method']['type']}-{example.get('tuning', {}).get('type', 'default')}"


@pytest.mark.parametrize("index", range(len(readme_job_examples())),
                         ids=[_name(e) for e in readme_job_examples()])
def test_readme_example_is_accepted_and_trains(project: Project, posted: list[dict[str, Any]],
                                               index: int) -> None:
    result = posted[index]
    assert result["status_code"] == 200, result["body"]
    job = result["job"]
    assert job["status"] == "succeeded", (job["error"], project.event_messages(job["id"])[-10:])
    assert job["model"] == result["example"]["model"]
    assert job["objective"]["type"] == result["example"]["method"]["type"]
    if "training_file" not in result["example"]:  # multitask names its files per task
        assert job["training_file"] is None
    assert project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]


def test_every_readme_example_is_posted() -> None:
    kinds = {e["method"]["type"] for e in readme_job_examples()}
    assert {"supervised", "multitask", "reward", "ppo", "rlhf", "dpo", "grpo"} <= kinds
