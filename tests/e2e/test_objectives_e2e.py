"""Objectives beyond SFT, end to end over the API on the tiny model: domain-adaptive pretraining
(LoRA packed, full row by row), multitask, a reward model and DPO.

Every job is queued at once (the one worker trains them back to back while finished ones are
checked). Each test asserts what a user would check: the job succeeded, its loss fell, and its
artifact, reloaded from the downloaded files alone, moved the model toward the training data.
Run with `-s` to see the table of training times and key figures.
"""

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from testbed.jobs import TERMINAL, Project
from testbed.learning import answer_log_likelihood, bundled_instructions

# -- toy data, deterministic ------------------------------------------------------------------


def corpus_lines() -> list[str]:
    """The DAPT corpus: the bundled corpus text, one row per line."""
    text = (resources.files("tunesmith") / "data" / "tiny_corpus.txt").read_text()
    return [line for line in text.splitlines() if line.strip()]


ANIMALS = ["cat", "dog", "cow", "horse", "sheep", "goat", "duck", "fox", "wolf", "bear", "lion",
           "tiger", "whale", "shark", "bee", "ant"]
OPPOSITES = [("hot", "cold"), ("up", "down"), ("big", "small"), ("day", "night"),
             ("old", "new"), ("black", "white"), ("open", "closed"), ("fast", "slow")]


def repeat_rows() -> list[dict[str, str]]:
    """A second task in alpaca rows: say the word twice."""
    return [{"instruction": "Repeat the word twice.", "input": w, "output": f"{w} {w}"}
            for w in ANIMALS]


def opposite_rows() -> list[dict[str, Any]]:
    """A third task in chat rows, sent as the job's training_file."""
    return [{"messages": [{"role": "user", "content": f"Opposite of {a}?"},
                          {"role": "assistant", "content": f"{b.capitalize()}."}]}
            for a, b in OPPOSITES]


MORE_QUESTIONS = [("What is the capital of Germany?", "Berlin."),
                  ("What is the capital of Italy?", "Rome."),
                  ("What is the capital of Spain?", "Madrid."),
                  ("How many legs does an insect have?", "Six."),
                  ("What do birds build?", "Nests."),
                  ("Which planet is the farthest from the sun?", "Neptune."),
                  ("What does a dog do?", "It barks."),
                  ("What color is snow?", "White.")]
# Separable for a tiny model: the chosen reply answers and is polite, the rejected one refuses.
REFUSALS = ["No.", "Whatever.", "I will not say."]


def preference_pairs() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(training pairs, held-out pairs): held-out pairs have questions training never saw."""
    questions = [(r["messages"][0]["content"], r["messages"][-1]["content"])
                 for r in bundled_instructions()] + MORE_QUESTIONS
    train: list[dict[str, str]] = []
    held_out: list[dict[str, str]] = []
    for i, (question, answer) in enumerate(questions):
        pairs = [{"prompt": f"Question: {question}\nAnswer:",
                  "chosen": f" {answer} I hope that helps.", "rejected": f" {refusal}"}
                 for refusal in REFUSALS]
        (held_out if i % 4 == 0 else train).extend(pairs)
    return train, held_out


# -- the jobs ----------------------------------------------------------------------------------

LORA = {"type": "lora", "r": 16, "alpha": 32}
DAPT_LORA_EPOCHS, DAPT_FULL_EPOCHS, DAPT_FULL_LENGTH = 8, 4, 16


def specs(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    def method(kind: str, hp: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"type": kind, kind: {"hyperparameters": hp, **extra}}

    return {
        "dapt_lora": {"training_file": files["corpus"], "tuning": LORA, "method": method(
            "pretraining", {"n_epochs": DAPT_LORA_EPOCHS, "batch_size": 4, "learning_rate": 1e-2,
                            "max_seq_length": 64})},
        # Row by row, each row cut at 16 tokens: what the events and trained_tokens must say.
        "dapt_full": {"training_file": files["corpus"], "tuning": {"type": "full"},
                      "method": method("pretraining", {
                          "n_epochs": DAPT_FULL_EPOCHS, "batch_size": 4, "learning_rate": 3e-3,
                          "max_seq_length": DAPT_FULL_LENGTH}, packing=False)},
        "multitask": {"training_file": files["opposites"], "tuning": LORA, "method": method(
            "multitask", {"n_epochs": 6, "batch_size": 8, "learning_rate": 1e-2},
            tasks=[{"name": "qa", "file": files["qa"], "weight": 2},
                   {"name": "repeat", "file": files["repeat"], "weight": 1}])},
        "reward": {"training_file": files["preferences"], "tuning": LORA, "method": method(
            "reward", {"n_epochs": 1, "batch_size": 8, "learning_rate": 5e-3})},
        "dpo": {"training_file": files["preferences"], "tuning": LORA, "method": method(
            "dpo", {"n_epochs": 1, "batch_size": 8, "learning_rate": 5e-3, "beta": "auto"})},
        # Every pair is longer than 8 tokens: nothing can train, and the error must say why.
        "reward_too_long": {"training_file": files["preferences"], "tuning": LORA,
                            "method": method("reward", {"max_seq_length": 8})},
    }


@pytest.fixture(scope="module")
def jobs(project: Project) -> dict[str, str]:
    train_pairs, _ = preference_pairs()
    files = {name: project.upload(rows, f"{name}.jsonl")["id"] for name, rows in {
        "corpus": [{"text": line} for line in corpus_lines()],
        "qa": bundled_instructions(), "repeat": repeat_rows(), "opposites": opposite_rows(),
        "preferences": train_pairs}.items()}
    return {name: project.create_job({"model": "tiny-llama", "seed": 1, **spec})["id"]
            for name, spec in specs(files).items()}


FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", autouse=True)
def report_figures() -> Any:
    yield
    print("\nobjective        | wall s | train s | steps | figures")
    for name, row in FIGURES.items():
        figures = ", ".join(f"{k}={v}" for k, v in row.items()
                            if k not in ("wall_s", "train_s", "steps"))
        print(f"{name:16} | {row['wall_s']!s:>6} | {row['train_s']!s:>7} | "
              f"{row['steps']!s:>5} | {figures}")


def finished(project: Project, jobs: dict[str, str], name: str) -> dict[str, Any]:
    job = project.wait(jobs[name], TERMINAL, timeout=400)
    events = project.events(job["id"])
    summary = [e["data"] for e in events if e["type"] == "metrics"
               and "train_runtime" in e["data"] and "train_samples_per_second" in e["data"]]
    FIGURES.setdefault(name, {}).update({
        "wall_s": (job["finished_at"] or 0) - (job["started_at"] or 0),
        "train_s": round(summary[-1]["train_runtime"], 1) if summary else None,
        "steps": job["progress"].get("step")})
    return job


def metrics(project: Project, job_id: str) -> list[dict[str, Any]]:
    """The metrics of each logged step (not the trainer's closing summary)."""
    return [e["data"] for e in project.events(job_id) if e["type"] == "metrics"
            and "train_samples_per_second" not in e["data"]]


def falls(values: list[float], factor: float) -> tuple[float, float]:
    """First and last (mean of up to three) of a series; asserts last < factor * first."""
    k = min(3, max(1, len(values) // 3))
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    assert last < factor * first, (first, last, values)
    return round(first, 3), round(last, 3)


def download(project: Project, job_id: str, prefix: str, tmp: Path) -> Path:
    """Only the files under `prefix`, into a fresh folder: the artifact must stand alone."""
    return project.download_artifacts(job_id, tmp, prefix) / prefix


@torch.no_grad()
def text_log_likelihood(model: Any, tokenizer: Any, texts: list[str]) -> float:
    """Mean log-probability per token of each text (ended by EOS, as trained)."""
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer(text + tokenizer.eos_token).input_ids])
        logprobs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        total += logprobs.gather(1, ids[0, 1:, None]).sum().item()
        count += ids.shape[1] - 1
    return total / count


# -- domain-adaptive pretraining ---------------------------------------------------------------


def test_dapt_lora_packs_every_token_and_learns_the_domain(stack, project, jobs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    job = finished(project, jobs, "dapt_lora")
    assert job["status"] == "succeeded", job["error"]
    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    lines = corpus_lines()
    corpus_tokens = sum(len(tokenizer(line + tokenizer.eos_token).input_ids) for line in lines)
    # No token lost to packing: each epoch trains exactly the corpus, EOS per row included.
    packed = next(e["data"] for e in project.events(job["id"])
                  if (e["data"] or {}).get("packing") == "wrapped")
    assert packed["corpus_tokens"] == packed["tokens_per_epoch"] == corpus_tokens
    assert job["trained_tokens"] == DAPT_LORA_EPOCHS * corpus_tokens
    losses = [m["loss"] for m in metrics(project, job["id"]) if "loss" in m]
    first, last = falls(losses, 0.85)

    folder = download(project, job["id"], "adapter", tmp_path)
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
    base = AutoModelForCausalLM.from_pretrained(stack.tiny_model)
    before = text_log_likelihood(base, tokenizer, lines)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(stack.tiny_model),
                                      folder)
    after = text_log_likelihood(tuned, tokenizer, lines)
    # A LoRA under the tiny model's frozen random output head gains less than full tuning.
    assert after > before + 0.5, (before, after)
    FIGURES["dapt_lora"].update(corpus_tokens=corpus_tokens, loss=f"{first}->{last}",
                                loglik_per_token=f"{before:.2f}->{after:.2f}")


def test_dapt_full_trains_row_by_row_and_learns_the_domain(stack, project, jobs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    job = finished(project, jobs, "dapt_full")
    assert job["status"] == "succeeded", job["error"]
    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    lines = corpus_lines()
    lengths = [len(tokenizer(line + tokenizer.eos_token).input_ids) for line in lines]
    kept = sum(min(n, DAPT_FULL_LENGTH) for n in lengths)
    # Unpacked, each row is cut at max_seq_length, and the job says so.
    report = next(e for e in project.events(job["id"])
                  if "rows_truncated" in (e["data"] or {}))
    assert report["level"] == "warn" and "packing: true" in report["message"]
    assert report["data"]["rows_truncated"] == sum(n > DAPT_FULL_LENGTH for n in lengths) > 0
    assert job["trained_tokens"] == DAPT_FULL_EPOCHS * kept
    losses = [m["loss"] for m in metrics(project, job["id"]) if "loss" in m]
    first, last = falls(losses, 0.8)

    folder = download(project, job["id"], "model", tmp_path)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    before = text_log_likelihood(AutoModelForCausalLM.from_pretrained(stack.tiny_model),
                                 tokenizer, lines)
    tuned = AutoModelForCausalLM.from_pretrained(folder)
    after = text_log_likelihood(tuned, AutoTokenizer.from_pretrained(folder), lines)
    assert after > before + 1.0, (before, after)
    FIGURES["dapt_full"].update(tokens_per_epoch=kept, loss=f"{first}->{last}",
                                loglik_per_token=f"{before:.2f}->{after:.2f}")


# -- multitask ---------------------------------------------------------------------------------


def test_multitask_mixes_by_weight_and_every_task_learns(stack, project, jobs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    job = finished(project, jobs, "multitask")
    assert job["status"] == "succeeded", job["error"]
    events = project.events(job["id"])
    mixture = next(e["data"]["tasks"] for e in events if "tasks" in (e["data"] or {}))
    shares = {t["name"]: t["share"] for t in mixture}
    # Weights 2 : 1 : 1 (training_file joins with weight 1) over 40 rows an epoch.
    assert shares == {"qa": 0.5, "repeat": 0.25, "training_file": 0.25}, mixture

    tasks = {"qa": bundled_instructions(), "repeat": repeat_rows(),
             "training_file": opposite_rows()}
    measured = [m for m in metrics(project, job["id"]) if "loss/qa" in m]
    assert len(measured) >= 3 and measured[0]["step"] == 1
    assert measured[-1]["step"] == job["progress"]["total_steps"]
    falling = {name: falls([m[f"loss/{name}"] for m in measured], 0.9) for name in tasks}

    folder = download(project, job["id"], "adapter", tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(stack.tiny_model)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(stack.tiny_model),
                                      folder)
    gains = {}
    for name, rows in tasks.items():
        before = answer_log_likelihood(base, tokenizer, rows)
        after = answer_log_likelihood(tuned, tokenizer, rows)
        assert after > before + 0.5, (name, before, after)
        gains[name] = f"{before:.2f}->{after:.2f}"
    FIGURES["multitask"].update(task_loss=falling, answer_loglik=gains)


# -- reward model ------------------------------------------------------------------------------


@torch.no_grad()
def score(model: Any, tokenizer: Any, prompt: str, response: str) -> float:
    ids = tokenizer(prompt + response + tokenizer.eos_token, return_tensors="pt")
    return model(**ids).logits[0, 0].item()


def test_reward_model_ranks_held_out_pairs(project, jobs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    job = finished(project, jobs, "reward")
    assert job["status"] == "succeeded", job["error"]
    logged = [m for m in metrics(project, job["id"]) if "accuracy" in m and "margin" in m]
    assert len(logged) >= 5
    loss = falls([m["loss"] for m in logged], 0.2)
    assert logged[-1]["margin"] > logged[0]["margin"] + 2 and logged[-1]["accuracy"] == 1.0

    listing = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]
    kinds = {a["name"].split("/")[0]: a["kind"] for a in listing}
    assert kinds == {"reward_model": "reward_model", "adapter": "peft_adapter"}, kinds
    # The merged folder alone is a reward model: what a later PPO job loads by path.
    folder = download(project, job["id"], "reward_model", tmp_path)
    assert not (folder / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    _, held_out = preference_pairs()
    margins = [score(model, tokenizer, p["prompt"], p["chosen"])
               - score(model, tokenizer, p["prompt"], p["rejected"]) for p in held_out]
    accuracy = sum(m > 0 for m in margins) / len(margins)
    assert accuracy >= 0.8, margins
    # The adapter carries the trained score head too (peft's SEQ_CLS modules_to_save).
    adapter = download(project, job["id"], "adapter", tmp_path)
    assert "score" in json.loads((adapter / "adapter_config.json").read_text())["modules_to_save"]
    FIGURES["reward"].update(loss=loss, held_out_accuracy=round(accuracy, 3),
                             held_out_margin=round(sum(margins) / len(margins), 2),
                             logged_margin=f"{logged[0]['margin']:.2f}->{logged[-1]['margin']:.2f}")


def test_reward_job_with_no_pair_that_fits_fails_with_invalid_data(project, jobs) -> None:  # type: ignore[no-untyped-def]
    job = finished(project, jobs, "reward_too_long")
    assert job["status"] == "failed"
    error = job["error"]
    assert error["code"] == "invalid_data" and error["param"] == "training_file", error
    assert "max_seq_length=8" in error["message"]
    assert "raise method.reward.hyperparameters.max_seq_length" in error["message"]


# -- DPO ---------------------------------------------------------------------------------------


@torch.no_grad()
def response_log_prob(model: Any, tokenizer: Any, prompt: str, response: str) -> float:
    prompt_ids = tokenizer(prompt).input_ids
    ids = tokenizer(prompt + response + tokenizer.eos_token).input_ids
    logprobs = model(input_ids=torch.tensor([ids])).logits[0, len(prompt_ids) - 1:-1]
    logprobs = logprobs.log_softmax(-1)
    return logprobs.gather(1, torch.tensor(ids[len(prompt_ids):])[:, None]).sum().item()


def test_dpo_raises_the_margin_over_the_reference(stack, project, jobs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    job = finished(project, jobs, "dpo")
    assert job["status"] == "succeeded", job["error"]
    assert job["resolved_hyperparameters"]["beta"] == 0.1
    logged = [m for m in metrics(project, job["id"]) if "rewards/margins" in m]
    loss = falls([m["loss"] for m in logged], 0.5)
    assert logged[-1]["rewards/margins"] > logged[0]["rewards/margins"]

    folder = download(project, job["id"], "adapter", tmp_path)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == []  # no "ref" copy saved
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reference = AutoModelForCausalLM.from_pretrained(stack.tiny_model).eval()
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(stack.tiny_model),
                                       folder).eval()
    train_pairs, _ = preference_pairs()
    margins = []
    for pair in train_pairs:
        chosen = (response_log_prob(policy, tokenizer, pair["prompt"], pair["chosen"])
                  - response_log_prob(reference, tokenizer, pair["prompt"], pair["chosen"]))
        rejected = (response_log_prob(policy, tokenizer, pair["prompt"], pair["rejected"])
                    - response_log_prob(reference, tokenizer, pair["prompt"], pair["rejected"]))
        margins.append(chosen - rejected)
    # The starting policy is the reference, whose margin is 0 on every pair.
    mean = sum(margins) / len(margins)
    assert mean > 2.0 and sum(m > 0 for m in margins) / len(margins) >= 0.9, margins
    FIGURES["dpo"].update(loss=loss, train_log_ratio_margin=round(mean, 2),
                          logged_margin=f"{logged[0]['rewards/margins']:.2f}->"
                                        f"{logged[-1]['rewards/margins']:.2f}")
