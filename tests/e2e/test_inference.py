"""Trying what was trained, through the official `openai` client: after the demo's LoRA SFT
job (the session's `lora_job`, tests/conftest.py), `/v1/models` lists it, chat answers the
training prompts as trained (the base model does not), streams give the same text, and another
project cannot see or use it."""

import concurrent.futures
from typing import Any

import httpx
import openai
import pytest

from testbed.learning import bundled_instructions


def client_for(stack: Any, project: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=project.key, max_retries=0,
                         timeout=120)


@pytest.fixture(scope="module")
def client(stack, project) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return client_for(stack, project)


def ask(client: openai.OpenAI, model: str, question: str, **kwargs: Any) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}],
        **{"temperature": 0, "max_tokens": 8, **kwargs})
    assert answer.object == "chat.completion" and answer.model == model
    return answer.choices[0].message.content or ""


def exact_answers(client: openai.OpenAI, model: str) -> tuple[int, list[str]]:
    rows = bundled_instructions()
    answers = [ask(client, model, r["messages"][0]["content"]).strip() for r in rows]
    expected = [r["messages"][-1]["content"] for r in rows]
    return sum(a == e for a, e in zip(answers, expected, strict=True)), answers


def test_models_list_shows_base_fine_tuned_and_checkpoints(client, project, lora_job) -> None:  # type: ignore[no-untyped-def]
    ids = [m.id for m in client.models.list()]
    name = lora_job["fine_tuned_model"]
    assert "tiny-llama" in ids and name in ids
    steps = [c["step_number"] for c in project.http.get(
        f"/v1/fine_tuning/jobs/{lora_job['id']}/checkpoints").json()["data"]]
    assert steps and all(f"{name}:ckpt-step-{s}" in ids for s in steps)
    model = client.models.retrieve(name)
    assert model.id == name and model.object == "model" and model.owned_by


def test_chat_answers_training_prompts_and_base_does_not(client, lora_job) -> None:  # type: ignore[no-untyped-def]
    tuned, answers = exact_answers(client, lora_job["fine_tuned_model"])
    assert tuned >= 14, answers
    base, base_answers = exact_answers(client, "tiny-llama")
    assert base == 0, base_answers


def test_stream_gives_the_same_text_in_chunks(client, lora_job) -> None:  # type: ignore[no-untyped-def]
    model = lora_job["fine_tuned_model"]
    question = bundled_instructions()[0]["messages"][0]["content"]
    whole = ask(client, model, question)
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0,
        max_tokens=8, stream=True)
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) >= 2 and "".join(pieces) == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_sse_ends_with_done(stack, project, lora_job) -> None:  # type: ignore[no-untyped-def]
    body = {"model": lora_job["fine_tuned_model"], "prompt": "What is", "max_tokens": 4,
            "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{stack.url}/v1/completions", json=body,
                      headers=project.http.headers, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and len(data) >= 3


def test_text_completion_continues_a_prompt(client, lora_job) -> None:  # type: ignore[no-untyped-def]
    answer = client.completions.create(model=lora_job["fine_tuned_model"], prompt="The sky is",
                                       max_tokens=5, temperature=0)
    assert answer.object == "text_completion" and answer.choices[0].text
    assert answer.usage.completion_tokens <= 5 and answer.usage.prompt_tokens > 0


def test_checkpoint_model_answers(client, project, lora_job) -> None:  # type: ignore[no-untyped-def]
    newest = project.http.get(
        f"/v1/fine_tuning/jobs/{lora_job['id']}/checkpoints").json()["data"][0]
    assert newest["step_number"] == lora_job["progress"]["total_steps"]
    # The last checkpoint is the final model: it answers as the job's result does.
    tuned, answers = exact_answers(client, newest["fine_tuned_model_checkpoint"])
    assert tuned >= 14, answers


def test_sampling_with_a_seed_repeats_and_stop_cuts(client, lora_job) -> None:  # type: ignore[no-untyped-def]
    model = lora_job["fine_tuned_model"]
    first = ask(client, model, "Tell me something", temperature=1.0, seed=7)
    assert ask(client, model, "Tell me something", temperature=1.0, seed=7) == first
    whole = ask(client, model, "What is the capital of France?")
    assert whole.strip() == "Paris."
    cut = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=8, stop=["ris"])
    assert cut.choices[0].message.content == whole[:whole.index("ris")]
    assert cut.choices[0].finish_reason == "stop"


def test_another_project_gets_404(stack, other_project, lora_job) -> None:  # type: ignore[no-untyped-def]
    other = client_for(stack, other_project)
    name = lora_job["fine_tuned_model"]
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(name)
    assert name not in [m.id for m in other.models.list()]
    with pytest.raises(openai.NotFoundError):
        other.models.delete(name)


def test_bad_requests_name_the_field(client, lora_job) -> None:  # type: ignore[no-untyped-def]
    model = lora_job["fine_tuned_model"]
    with pytest.raises(openai.BadRequestError) as long_prompt:
        client.completions.create(model=model, prompt="word " * 5000, max_tokens=4)
    assert "context length is" in long_prompt.value.message
    assert long_prompt.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.completions.create(model=model, prompt="Hi", max_tokens=10**6)
    assert too_many.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as choices:
        client.chat.completions.create(model=model, n=2,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert choices.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(model=model, tools=[{"type": "function", "function": {
            "name": "f", "parameters": {}}}], messages=[{"role": "user", "content": "Hi"}])
    assert tools.value.body["param"] == "tools"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model",
                                       messages=[{"role": "user", "content": "Hi"}])


def test_sixteen_concurrent_requests_all_answer(stack, lora_job) -> None:  # type: ignore[no-untyped-def]
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.project("load").key,
                           max_retries=0, timeout=180)
    rows = bundled_instructions()

    def one(row: dict[str, Any]) -> str:
        return ask(client, "tiny-llama", row["messages"][0]["content"])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, rows))
    assert len(answers) == 16 and all(isinstance(a, str) for a in answers)


def test_concurrent_greedy_chats_batch_and_answer_as_alone(stack, client, lora_job) -> None:  # type: ignore[no-untyped-def]
    """Eight concurrent greedy chats to the fine-tuned model (each its own max_tokens) share
    `generate` calls and give exactly the answers, token counts and finish reasons the same
    requests give one at a time."""
    model = lora_job["fine_tuned_model"]
    asks = [(r["messages"][0]["content"], 3 + i % 6) for i, r in
            enumerate(bundled_instructions()[:8])]

    def one(question_tokens: tuple[str, int]) -> tuple[str | None, int, str]:
        question, max_tokens = question_tokens
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0,
            max_tokens=max_tokens)
        assert answer.usage is not None
        return (answer.choices[0].message.content, answer.usage.completion_tokens,
                answer.choices[0].finish_reason)

    alone = [one(a) for a in asks]
    before = httpx.get(f"{stack.inference_url}/stats", timeout=10).json()
    with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(one, asks))
    after = httpx.get(f"{stack.inference_url}/stats", timeout=10).json()
    assert together == alone
    shared = (after["batched_requests"] - before["batched_requests"]) - (
        after["batches"] - before["batches"])
    assert shared > 0 and after["largest_batch"] > 1, (before, after)


def test_delete_removes_the_weights_not_the_job(client, project, lora_job) -> None:  # type: ignore[no-untyped-def]
    checkpoints = project.http.get(
        f"/v1/fine_tuning/jobs/{lora_job['id']}/checkpoints").json()["data"]
    oldest = checkpoints[-1]["fine_tuned_model_checkpoint"]
    deleted = client.models.delete(oldest)
    assert deleted.deleted and deleted.id == oldest
    assert oldest not in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        ask(client, oldest, "Hi")
    assert project.job(lora_job["id"])["status"] == "succeeded"
    assert lora_job["fine_tuned_model"] in [m.id for m in client.models.list()]
    with pytest.raises(openai.BadRequestError):
        client.models.delete("tiny-llama")


def test_memory_budget_kept_while_five_fine_tuned_models_take_turns(stack, lora_job) -> None:  # type: ignore[no-untyped-def]
    """A process of its own, with a budget of the base and two and a half adapters: the five
    listed checkpoints of the LoRA job (five fine-tuned models on one base) used in turn,
    twice round, never hold more than the budget, and its resident memory stops growing."""
    from testbed.servers import free_port, start_inference, wait_inference

    job_dir = stack.home / "jobs" / lora_job["id"]
    listed = sorted((d for d in (job_dir / "listed_checkpoints").glob("step-*") if d.is_dir()),
                    key=lambda p: int(p.name.removeprefix("step-")))
    # The final adapter and the newest checkpoints (the delete test may have removed the
    # oldest one's weights): five fine-tuned models on one base.
    folders = [*listed, job_dir / "artifacts" / "adapter"][-5:]
    assert len(folders) == 5 and all(any(f.glob("*.safetensors")) for f in folders), folders
    adapter_bytes = max(f.stat().st_size for d in folders for f in d.glob("*.safetensors"))
    base_bytes = sum(f.stat().st_size for f in stack.tiny_model.glob("*.safetensors"))
    budget = base_bytes + 2.5 * adapter_bytes
    env = {**stack.env, "TUNESMITH_INFERENCE_URL": f"http://127.0.0.1:{free_port()}",
           "TUNESMITH_INFERENCE_MEMORY_BUDGET_MIB": str(budget / 2**20)}
    service = start_inference(env, stack.root / "inference-budget.log")
    try:
        wait_inference(service, env)
        url = env["TUNESMITH_INFERENCE_URL"]
        rss = []
        for _ in range(2):
            for folder in folders:
                ref = {"model_id": folder.name, "base_path": str(stack.tiny_model),
                       "tuning": "lora", "weights_path": str(folder)}
                answer = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
                    "model": folder.name, "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 4, "temperature": 0, "tunesmith_model": ref})
                assert answer.status_code == 200, answer.text
                stats = httpx.get(f"{url}/stats", timeout=10).json()
                assert stats["loaded_bytes"] <= stats["budget_bytes"], stats
                assert len([u for u in stats["loaded"] if u["kind"] == "adapter"]) <= 2, stats
            rss.append(stats["rss_bytes"])
        assert stats["evictions"] >= 8 and stats["loads"] == 11, stats  # base + 10 adapters
        print(f"\nbudget {budget / 2**20:.2f} MiB, loaded {stats['loaded_bytes'] / 2**20:.2f} "
              f"MiB, RSS after each round {[round(r / 2**20) for r in rss]} MiB")
        assert rss[1] - rss[0] < 64 * 2**20, rss
    finally:
        service.stop()


def readme_try_it() -> tuple[list[str], str]:
    """README "Try it": its curl commands (continuations joined) and its Python block."""
    import re

    from testbed.servers import REPO

    section = (REPO / "README.md").read_text().split("## Try it", 1)[1].split("\n## ", 1)[0]
    bash = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    commands = [line.strip() for line in re.sub(r"\\\n\s*", " ", bash).splitlines()
                if line.strip().startswith("curl")]
    return commands, re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


def test_readme_try_it_runs(stack, project, lora_job) -> None:  # type: ignore[no-untyped-def]
    import contextlib
    import io
    import json
    import subprocess

    commands, python = readme_try_it()
    assert len(commands) == 3
    model = lora_job["fine_tuned_model"]
    env = {**stack.env, "KEY": project.key, "MODEL": model}
    outputs = []
    for command in commands:
        command = command.replace("http://127.0.0.1:8000", stack.url)
        result = subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert model in [m["id"] for m in json.loads(outputs[0])["data"]]
    assert json.loads(outputs[1])["choices"][0]["message"]["content"].strip() == "Paris."
    assert outputs[2].rstrip().endswith("data: [DONE]")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(python.replace("http://127.0.0.1:8000", stack.url),
             {"KEY": project.key, "MODEL": model})
    lines = printed.getvalue().splitlines()
    assert model in lines[0] and lines[1].strip() == "Paris."
