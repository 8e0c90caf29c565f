"""What a user checks after training: did the model move toward the training answers?"""

import json
from importlib import resources
from typing import Any

import torch


def bundled_instructions() -> list[dict[str, Any]]:
    text = (resources.files("tunesmith") / "data" / "instructions.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def prompt_answer_ids(tokenizer: Any, row: dict[str, Any]) -> tuple[list[int], list[int]]:
    from worker.data.sft_data import prompt_and_answer

    prompt, answer = prompt_and_answer(row, tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False).input_ids
    return prompt_ids, answer_ids


@torch.no_grad()
def answer_token_accuracy(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> float:
    """Share of answer tokens the model predicts exactly, given the prompt (teacher-forced)."""
    correct = total = 0
    for row in rows:
        prompt, answer = prompt_answer_ids(tokenizer, row)
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
        predicted = logits[len(prompt) - 1:-1].argmax(-1).tolist()
        correct += sum(p == a for p, a in zip(predicted, answer, strict=True))
        total += len(answer)
    return correct / total


@torch.no_grad()
def answer_log_likelihood(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> float:
    """Mean log-probability per answer token."""
    total, count = 0.0, 0
    for row in rows:
        prompt, answer = prompt_answer_ids(tokenizer, row)
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
        logprobs = logits[len(prompt) - 1:-1].log_softmax(-1)
        total += logprobs[torch.arange(len(answer)), torch.tensor(answer)].sum().item()
        count += len(answer)
    return total / count


@torch.no_grad()
def greedy_answers(model: Any, tokenizer: Any, rows: list[dict[str, Any]],
                   max_new_tokens: int = 8) -> list[str]:
    answers = []
    for row in rows:
        prompt, _ = prompt_answer_ids(tokenizer, row)
        out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip())
    return answers
