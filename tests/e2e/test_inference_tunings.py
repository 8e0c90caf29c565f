"""Chat with the result of every tuning through the official `openai` client: the jobs of
tests/e2e/test_tunings_e2e.py (one per tuning, trained once per session), served by the
inference process whatever their tuning. Weight tunings (full, LoRA, QLoRA, bottleneck
adapters) answer training prompts exactly; prompt learning, which only steers the frozen
random model, shows the answers' form (one short sentence ending in '.'), as its training
tests do."""

from typing import Any

import openai
import pytest

from testbed.learning import bundled_instructions
from testbed.tuning_jobs import NAMES

PROMPT_LEARNING = {"prefix", "p_tuning_v2", "p_tuning", "prompt"}
# Exact answers of 16 (greedy), set below what these jobs measured (`pytest -s` prints them).
MIN_EXACT = {"full": 10, "lora": 10, "qlora": 10, "adapter": 6}


def answers(client: openai.OpenAI, model: str) -> list[str]:
    out = []
    for row in bundled_instructions():
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": row["messages"][0]["content"]}],
            temperature=0, max_tokens=8)
        out.append((reply.choices[0].message.content or "").strip())
    return out


def has_answer_form(text: str) -> bool:
    return text.endswith(".") and len(text.split()) <= 3


@pytest.fixture(scope="module")
def client(stack, project) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=project.key, max_retries=0,
                         timeout=120)


@pytest.fixture(scope="module")
def base_answers(client) -> list[str]:  # type: ignore[no-untyped-def]
    return answers(client, "tiny-llama")


@pytest.mark.parametrize("name", NAMES)
def test_each_tuning_answers_through_chat(project, tuning_jobs, client, base_answers,
                                          name: str) -> None:
    job: dict[str, Any] = project.wait(tuning_jobs[name]["id"], timeout=1200)
    assert job["status"] == "succeeded", job["error"]
    model = job["fine_tuned_model"]
    assert model in [m.id for m in client.models.list()]
    got = answers(client, model)
    expected = [r["messages"][-1]["content"] for r in bundled_instructions()]
    exact = sum(a == e for a, e in zip(got, expected, strict=True))
    form = sum(map(has_answer_form, got))
    base_form = sum(map(has_answer_form, base_answers))
    print(f"\n{name}: {exact}/16 exact, {form}/16 in the answers' form (base {base_form}): "
          f"{got[:4]}")
    if name in PROMPT_LEARNING:
        assert form >= 8 > base_form, got
    else:
        assert exact >= MIN_EXACT[name], got
    # Its checkpoint at the last step is a model too, and answers as the result does.
    checkpoint = f"{model}:ckpt-step-{job['progress']['total_steps']}"
    assert answers(client, checkpoint)[:4] == got[:4]
