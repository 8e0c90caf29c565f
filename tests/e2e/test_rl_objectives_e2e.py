"""The RL objectives end to end over the API, on the tiny model: GRPO, PPO against a finished
reward job (LoRA; full tuning against a reward model by name; a cancel), and RLHF's three
stages in one job, its worker killed in stage 3 so that the job resumes there without redoing
stages 1-2. Each shows learning, judged from the downloaded artifacts as a user would: the
trained policy earns more reward than the one it started from.

The toy tasks are built so a random-init two-layer model learns them in seconds:
- GRPO and PPO from the base model: the reward favours one answer, "Blue.", to every bundled
  question (GRPO: similarity to that answer; PPO: a reward model trained on pairs preferring
  it to the real answer). A constant target is one a near-uniform policy finds by exploring;
  sixteen different answers are not (measured: GRPO barely moved on those in the same time).
- RLHF: SFT on every answer with two endings, "." and "!"; the reward model prefers "!";
  PPO must move the SFT policy to "!" and keep its answers.
"""

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from testbed.jobs import Project, train_and_wait
from testbed.learning import bundled_instructions
from worker.rl.rewards import answer_similarity

FAVOURED = "Blue."
RESPONSE_LENGTH = 8
GRPO_STEPS, GRPO_LENGTH = 60, 3
QUESTIONS = [r["messages"][0]["content"] for r in bundled_instructions()]
ANSWERS = [r["messages"][-1]["content"] for r in bundled_instructions()]
LORA = {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0}
REWARD_SPEC = {
    "model": "tiny-llama",
    "method": {"type": "reward", "reward": {"hyperparameters": {
        "n_epochs": 20, "batch_size": 8, "learning_rate": 1e-3}}},
    "tuning": {"type": "full"}, "seed": 3,
}
# LoRA PPO on the tiny model learns with a high learning rate and a light KL pull.
PPO_HYPERPARAMETERS = {
    "total_episodes": 320, "batch_size": 16, "gradient_accumulation_steps": 2,
    "learning_rate": 3e-2, "kl_coef": 0.01, "response_length": RESPONSE_LENGTH,
    "temperature": 0.7, "save_steps": 5,
}

# From an SFT policy PPO needs a gentle hand: at the rates above it finds in two updates
# that the reward model scores a bare "!" as high as a right answer ending in "!" and forgets
# the answers; lr 3e-4 with kl_coef 0.2 keeps them (measured: greedy answers all right and
# all ending in "!", sampled score -0.7 -> 6.3; lr 1e-3 lost a quarter of the answers).
RLHF_PPO_HYPERPARAMETERS = {**PPO_HYPERPARAMETERS, "learning_rate": 3e-4, "kl_coef": 0.2}


def grpo_spec() -> dict[str, Any]:
    # 4 prompts x 8 completions a step: groups of 8 give steady advantages (measured over
    # seeds 0, 1, 3: reward 0.15 -> 0.42..0.54 in 60 steps; groups of 4 stalled on one seed).
    hp = {"max_steps": GRPO_STEPS, "batch_size": 4, "learning_rate": 1e-2,
          "num_generations": 8, "max_completion_length": GRPO_LENGTH, "temperature": 0.7}
    return {"model": "tiny-llama", "tuning": LORA, "seed": 3,
            "method": {"type": "grpo", "grpo": {"hyperparameters": hp,
                                                 "reward": {"type": "answer_similarity"}}}}


def preference_rows() -> list[dict[str, str]]:
    return [{"prompt": q, "chosen": FAVOURED, "rejected": a if a != FAVOURED else "Red."}
            for q, a in zip(QUESTIONS, ANSWERS, strict=True)]


def metrics(project: Project, job_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in project.events(job_id) if e["type"] == "metrics"]


def training_seconds(project: Project, job_id: str) -> float:
    """From the training child's start to the job's end, by the events' clocks."""
    events = project.events(job_id)
    start = next(e["created_at"] for e in events
                 if e["message"].startswith("Training process started"))
    return events[-1]["created_at"] - start


# -- what a user would run on the downloaded artifacts ------------------------------------

def load_policy(base: Path, adapter: Path | None = None) -> Any:
    """The base model, or the base with a downloaded adapter."""
    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        assert (adapter / "adapter_config.json").is_file()
        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


@torch.no_grad()
def greedy_completions(model: Any, tokenizer: Any, questions: list[str],
                       max_new_tokens: int = RESPONSE_LENGTH) -> list[str]:
    out = []
    for question in questions:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                               tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        generated = model.generate(input_ids=ids, max_new_tokens=max_new_tokens,
                                   do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True))
    return out


@torch.no_grad()
def reward_scores(folder: Path, questions: list[str], completions: list[str]) -> list[float]:
    """The reward model's score of prompt + response + EOS, as RewardTrainer trained it."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    texts = [q + c + tokenizer.eos_token for q, c in zip(questions, completions, strict=True)]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return model(**batch).logits[:, 0].tolist()


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


# -- GRPO -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grpo(project: Project, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    upload = project.upload([{"prompt": q, "answer": FAVOURED} for q in QUESTIONS],
                            "grpo.jsonl")
    started = time.monotonic()
    job = train_and_wait(project, {**grpo_spec(), "training_file": upload["id"]})
    wall = time.monotonic() - started
    folder = project.download_artifacts(job["id"], tmp_path_factory.mktemp("grpo"))
    return {"job": job, "folder": folder, "wall": wall,
            "train": training_seconds(project, job["id"])}


def test_grpo_raises_the_reward_during_training(project: Project, grpo: dict[str, Any]) -> None:
    job = grpo["job"]
    assert job["status"] == "succeeded"
    assert job["resolved_hyperparameters"]["num_generations"] == 8
    assert job["progress"]["step"] == job["progress"]["total_steps"] == GRPO_STEPS
    rewards = [m["reward"] for m in metrics(project, job["id"]) if "reward" in m]
    assert len(rewards) >= 30, rewards
    early, late = mean(rewards[:10]), mean(rewards[-10:])
    print(f"\nGRPO: reward {early:.3f} -> {late:.3f} over {len(rewards)} logs; "
          f"{grpo['train']:.1f} s in the child, {grpo['wall']:.1f} s end to end")
    assert late > early + 0.15, (early, late)


def test_grpo_adapter_answers_closer_than_the_base(stack: Any, grpo: dict[str, Any]) -> None:
    folder = grpo["folder"] / "adapter"
    assert (folder / "adapter_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    answers = [FAVOURED] * len(QUESTIONS)
    scores = {}
    for name, model in (("base", load_policy(stack.tiny_model)),
                        ("tuned", load_policy(stack.tiny_model, folder))):
        completions = greedy_completions(model, tokenizer, QUESTIONS,
                                         max_new_tokens=GRPO_LENGTH)
        scores[name] = mean(answer_similarity(completions, answers))
    print(f"\nGRPO greedy answer_similarity: base {scores['base']:.3f}, "
          f"tuned {scores['tuned']:.3f}")
    assert scores["tuned"] > scores["base"] + 0.2, scores


# -- PPO against a finished reward job ----------------------------------------------------

@pytest.fixture(scope="module")
def reward_job(project: Project, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    upload = project.upload(preference_rows(), "preferences.jsonl")
    started = time.monotonic()
    job = train_and_wait(project, {**REWARD_SPEC, "training_file": upload["id"]})
    folder = project.download_artifacts(job["id"], tmp_path_factory.mktemp("reward"))
    return {"job": job, "folder": folder / "reward_model", "wall": time.monotonic() - started}


@pytest.fixture(scope="module")
def ppo(project: Project, reward_job: dict[str, Any],
        tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    upload = project.upload([{"prompt": q} for q in QUESTIONS], "prompts.jsonl")
    spec = {"model": "tiny-llama", "training_file": upload["id"], "tuning": LORA, "seed": 3,
            "method": {"type": "ppo", "ppo": {
                "hyperparameters": PPO_HYPERPARAMETERS,
                "reward_model": {"job": reward_job["job"]["id"]}}}}
    started = time.monotonic()
    job = train_and_wait(project, spec)
    wall = time.monotonic() - started
    folder = project.download_artifacts(job["id"], tmp_path_factory.mktemp("ppo"))
    return {"job": job, "folder": folder, "wall": wall,
            "train": training_seconds(project, job["id"])}


def test_reward_model_prefers_the_favoured_answer(reward_job: dict[str, Any]) -> None:
    chosen = reward_scores(reward_job["folder"], QUESTIONS, [FAVOURED] * len(QUESTIONS))
    rejected = reward_scores(reward_job["folder"], QUESTIONS, ANSWERS)
    wins = sum(c > r for c, r, a in zip(chosen, rejected, ANSWERS, strict=True) if a != FAVOURED)
    assert wins == len(QUESTIONS) - 1, (chosen, rejected)


def test_ppo_raises_the_reward_during_training(project: Project, ppo: dict[str, Any]) -> None:
    job = ppo["job"]
    assert job["status"] == "succeeded"
    assert job["progress"]["step"] == job["progress"]["total_steps"] == 20
    logs = metrics(project, job["id"])
    assert [m["step"] for m in logs] == list(range(1, 21))
    for key in ("reward_mean", "kl", "policy_loss", "value_loss", "loss", "learning_rate",
                "episode", "epoch"):
        assert all(key in m for m in logs), key
    early, late = mean([m["reward_mean"] for m in logs[:4]]), \
        mean([m["reward_mean"] for m in logs[-4:]])
    print(f"\nPPO: reward model score {early:.2f} -> {late:.2f} over {len(logs)} updates; "
          f"{ppo['train']:.1f} s in the child, {ppo['wall']:.1f} s end to end")
    assert late > early + 1.0, (early, late)


def test_ppo_job_shows_the_hyperparameters_that_ran(project: Project,
                                                   ppo: dict[str, Any]) -> None:
    """The job object, read back over the API, shows resolved values where the PPO job
    asked for "auto": in its objective and in OpenAI's top-level hyperparameters."""
    job = project.job(ppo["job"]["id"])
    resolved = job["resolved_hyperparameters"]
    assert job["hyperparameters"] == {key: resolved[key] for key in (
        "n_epochs", "batch_size", "learning_rate_multiplier")}
    assert "auto" not in job["hyperparameters"].values(), job["hyperparameters"]
    ran = job["objective"]["ppo"]["hyperparameters"]
    assert "auto" not in ran.values(), ran
    assert ran["total_episodes"] == resolved["total_episodes"]


def test_ppo_checkpoints_are_listed(project: Project, ppo: dict[str, Any]) -> None:
    page = project.http.get(f"/v1/fine_tuning/jobs/{ppo['job']['id']}/checkpoints").json()
    steps = [c["step_number"] for c in page["data"]]
    assert steps == [20, 15, 10, 5], steps
    assert all("reward_mean" in c["metrics"] for c in page["data"])


def test_ppo_policy_scores_higher_than_the_base(stack: Any, ppo: dict[str, Any],
                                                reward_job: dict[str, Any]) -> None:
    folder = ppo["folder"] / "adapter"
    assert (folder / "adapter_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    scores = {}
    for name, model in (("base", load_policy(stack.tiny_model)),
                        ("tuned", load_policy(stack.tiny_model, folder))):
        completions = greedy_completions(model, tokenizer, QUESTIONS)
        scores[name] = mean(reward_scores(reward_job["folder"], QUESTIONS, completions))
    print(f"\nPPO greedy reward-model score: base {scores['base']:.2f}, "
          f"tuned {scores['tuned']:.2f}")
    assert scores["tuned"] > scores["base"] + 1.0, scores



def ppo_spec(prompt_file: str, reward_job_id: str, tuning: dict[str, Any],
             **hyperparameters: Any) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": prompt_file, "tuning": tuning, "seed": 3,
            "method": {"type": "ppo", "ppo": {
                "hyperparameters": {**PPO_HYPERPARAMETERS, **hyperparameters},
                "reward_model": {"job": reward_job_id}}}}


def test_full_ppo_against_a_reward_model_by_name(
        stack: Any, project: Project, reward_job: dict[str, Any], ppo: dict[str, Any],
        tmp_path: Path) -> None:
    # The operator puts the reward model under the models root; the job names it.
    shutil.copytree(reward_job["folder"], stack.home / "models" / "tiny-reward")
    # Full tuning: the reference is a frozen copy of the model and the artifact the model.
    spec = ppo_spec(ppo["job"]["training_file"], reward_job["job"]["id"], {"type": "full"},
                    total_episodes=128, learning_rate=3e-3)
    spec["method"]["ppo"]["reward_model"] = {"model": "tiny-reward"}
    started = time.monotonic()
    job = train_and_wait(project, spec)
    logs = metrics(project, job["id"])
    assert [m["step"] for m in logs] == list(range(1, 9))
    folder = project.download_artifacts(job["id"], tmp_path) / "model"
    assert (folder / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    scores = {name: mean(reward_scores(reward_job["folder"], QUESTIONS, greedy_completions(
                  AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer, QUESTIONS)))
              for name, path in (("base", stack.tiny_model), ("tuned", folder))}
    print(f"\nfull PPO: reward {logs[0]['reward_mean']:.2f} -> {logs[-1]['reward_mean']:.2f} "
          f"in 8 updates; greedy score {scores}; {time.monotonic() - started:.1f} s end to end")
    assert scores["tuned"] > scores["base"] + 1.0, scores


def test_cancelled_ppo_stops_within_seconds_at_a_checkpoint(
        project: Project, reward_job: dict[str, Any], ppo: dict[str, Any]) -> None:
    # Prompts may come from preference rows too: here the reward job's own file.
    spec = ppo_spec(reward_job["job"]["training_file"], reward_job["job"]["id"], LORA,
                    total_episodes=100_000, save_steps=100_000)
    job = project.create_job(spec)
    deadline = time.monotonic() + 120
    while not (project.job(job["id"])["progress"] or {}).get("step"):
        assert time.monotonic() < deadline, project.event_messages(job["id"])[-10:]
        time.sleep(0.2)
    asked = time.monotonic()
    response = project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    done = project.wait(job["id"], timeout=60)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled"
    last = max(m["step"] for m in metrics(project, job["id"]))
    page = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()
    # The update running when the stop came finished and was saved; no further update ran.
    assert [c["step_number"] for c in page["data"]] == [last], (page, last)
    print(f"\nPPO cancel: stopped {took:.1f} s after the request, at update {last}")
    assert took < 15, took

# -- RLHF: SFT -> reward -> PPO in one job, its worker killed in stage 3 -------------------

def rlhf_spec(training_file: str, preference_file: str, prompt_file: str) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": training_file, "tuning": LORA, "seed": 3,
            "method": {"type": "rlhf", "rlhf": {
                "preference_file": preference_file, "prompt_file": prompt_file,
                "sft": {"hyperparameters": {"n_epochs": 30, "batch_size": 8,
                                            "learning_rate": 5e-3}},
                "reward": {"hyperparameters": {"n_epochs": 20, "batch_size": 8,
                                               "learning_rate": 1e-2}},
                "ppo": RLHF_PPO_HYPERPARAMETERS}}}


def sft_rows_two_endings() -> list[dict[str, Any]]:
    """Every bundled question twice, its answer ending in "." and in "!": the SFT policy
    learns the answers with either ending, for the reward model to choose between."""
    return [{"messages": [{"role": "user", "content": q},
                          {"role": "assistant", "content": a[:-1] + end}]}
            for q, a in zip(QUESTIONS, ANSWERS, strict=True) for end in ".!"]


def exclaiming_preferences() -> list[dict[str, str]]:
    return [{"prompt": q, "chosen": a[:-1] + "!", "rejected": a}
            for q, a in zip(QUESTIONS, ANSWERS, strict=True)]


@torch.no_grad()
def sampled_completions(model: Any, tokenizer: Any, questions: list[str], *, samples: int,
                        temperature: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """`samples` sampled responses per question: (questions repeated, responses)."""
    torch.manual_seed(seed)
    asked, out = [], []
    for question in questions:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                               tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        generated = model.generate(input_ids=ids.repeat(samples, 1), do_sample=True,
                                   temperature=temperature, top_k=0, top_p=1.0,
                                   max_new_tokens=RESPONSE_LENGTH,
                                   pad_token_id=tokenizer.pad_token_id)
        out += tokenizer.batch_decode(generated[:, ids.shape[1]:], skip_special_tokens=True)
        asked += [question] * samples
    return asked, out


def stage_checkpoints(events: list[dict[str, Any]], stage: str) -> list[int]:
    return [e["data"]["step"] for e in events
            if e["message"].startswith("Checkpoint saved")
            and e["data"]["path"].startswith(f"checkpoints/{stage}/")]


@pytest.fixture(scope="module")
def rlhf(stack: Any, project: Project, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Any]:
    files = [project.upload(sft_rows_two_endings(), "sft.jsonl")["id"],
             project.upload(exclaiming_preferences(), "rlhf-preferences.jsonl")["id"],
             project.upload([{"prompt": q} for q in QUESTIONS], "rlhf-prompts.jsonl")["id"]]
    started = time.monotonic()
    job = project.create_job(rlhf_spec(*files))
    deadline = time.monotonic() + 400
    while not stage_checkpoints(events := project.events(job["id"]), "ppo"):
        assert time.monotonic() < deadline, [e["message"] for e in events][-20:]
        assert project.job(job["id"])["status"] in ("queued", "running"), \
            [e["message"] for e in events][-20:]
        time.sleep(0.1)
    # kill -9 the worker and its training child in stage 3, after its first checkpoint;
    # the reaper requeues the job when its lease runs out, and a new worker takes it.
    stack.worker.kill_group()
    killed = {"at": time.monotonic() - started, "step": project.job(job["id"])["progress"],
              "checkpoints": stage_checkpoints(project.events(job["id"]), "ppo")}
    stack.restart_worker("w-rlhf")
    done = project.wait(job["id"], timeout=400)
    assert done["status"] == "succeeded", (done["error"], project.event_messages(job["id"])[-20:])
    wall = time.monotonic() - started
    folder = project.download_artifacts(job["id"], tmp_path_factory.mktemp("rlhf"))
    return {"job": done, "events": project.events(job["id"]), "folder": folder,
            "killed": killed, "wall": wall}


def test_rlhf_runs_three_stages_in_order_and_resumes_in_the_third(
        rlhf: dict[str, Any]) -> None:
    job, events, killed = rlhf["job"], rlhf["events"], rlhf["killed"]
    messages = [e["message"] for e in events]
    assert job["attempt"] == 2, messages
    assert killed["step"].get("stage") == "ppo" and killed["step"]["step"] < 20, killed
    started = [m.split(" (")[0] for m in messages if re.match(r"Stage \d of 3: \w+ \(", m)]
    # Attempt 1: the three stages begin in order; attempt 2 skips the two finished ones.
    assert started == [
        "Stage 1 of 3: sft", "Stage 2 of 3: reward", "Stage 3 of 3: ppo", "Stage 3 of 3: ppo"]
    skipped = [m for m in messages if "finished on an earlier attempt" in m]
    assert [m.split(":")[1].split()[0] for m in skipped] == ["sft", "reward"], messages
    # Nothing of stages 1-2 trained twice; stage 3 picked up at its checkpoint.
    assert sum(m.startswith("sft: Training") for m in messages) == 1, messages
    assert sum(m.startswith("reward: Training") for m in messages) == 1, messages
    resumed = [e["data"] for e in events if e["message"].startswith("ppo: Resuming from")]
    assert len(resumed) == 1 and resumed[0]["stage"] == "ppo", resumed
    assert resumed[0]["resume_from_step"] == max(killed["checkpoints"]) or \
        resumed[0]["resume_from_step"] > max(killed["checkpoints"])
    # Metrics carry their stage, and the stages follow each other.
    order = [e["data"]["stage"] for e in events if e["type"] == "metrics"]
    firsts = [order.index(s) for s in ("sft", "reward", "ppo")]
    lasts = [len(order) - 1 - order[::-1].index(s) for s in ("sft", "reward", "ppo")]
    assert lasts[0] < firsts[1] and lasts[1] < firsts[2], order
    ppo_steps = {e["data"]["step"] for e in events
                 if e["type"] == "metrics" and e["data"]["stage"] == "ppo"}
    assert ppo_steps == set(range(1, 21))
    assert job["resolved_hyperparameters"].keys() >= {"sft", "reward", "ppo"}
    print(f"\nRLHF: killed {killed['at']:.1f} s in at PPO update {killed['step']['step']} "
          f"(checkpoints {killed['checkpoints']}), resumed from update "
          f"{resumed[0]['resume_from_step']}; {rlhf['wall']:.1f} s end to end")


def test_rlhf_job_shows_the_hyperparameters_that_ran(rlhf: dict[str, Any]) -> None:
    """Each stage's hyperparameters show what ran, not "auto"; the deprecated top-level ones
    describe the SFT stage, as OpenAI's fields do."""
    job = rlhf["job"]
    ran, resolved = job["objective"]["rlhf"], job["resolved_hyperparameters"]
    for stage in (ran["sft"]["hyperparameters"], ran["reward"]["hyperparameters"], ran["ppo"]):
        assert "auto" not in stage.values(), stage
    assert job["hyperparameters"] == {key: resolved["sft"][key] for key in (
        "n_epochs", "batch_size", "learning_rate_multiplier")}


def test_rlhf_keeps_each_stages_artifact(project: Project, rlhf: dict[str, Any]) -> None:
    listing = project.http.get(f"/v1/fine_tuning/jobs/{rlhf['job']['id']}/artifacts").json()
    names = {a["name"] for a in listing["data"]}
    assert {"sft/adapter/adapter_model.safetensors", "reward/reward_model/config.json",
            "reward/reward_model/model.safetensors",
            "ppo/adapter/adapter_model.safetensors"} <= names, names


def right_answers(responses: list[str]) -> float:
    """Share of responses that are the bundled answer, ending in "." or "!"."""
    return mean([float(r.strip()[:-1] == a[:-1] and r.strip()[-1:] in ".!")
                 for r, a in zip(responses, ANSWERS, strict=True)])


def exclaimed(responses: list[str]) -> float:
    return mean([float(r.strip().endswith("!")) for r in responses])


def test_rlhf_policy_beats_the_sft_policy_under_the_reward_model(
        stack: Any, rlhf: dict[str, Any]) -> None:
    folder = rlhf["folder"]
    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    policies = {"sft": load_policy(stack.tiny_model, folder / "sft" / "adapter"),
                "ppo": load_policy(stack.tiny_model, folder / "ppo" / "adapter")}
    reward_model = folder / "reward" / "reward_model"
    chosen = reward_scores(reward_model, QUESTIONS, [a[:-1] + "!" for a in ANSWERS])
    rejected = reward_scores(reward_model, QUESTIONS, ANSWERS)
    assert all(c > r for c, r in zip(chosen, rejected, strict=True)), (chosen, rejected)
    greedy, sampled, scores = {}, {}, {}
    for name, model in policies.items():
        greedy[name] = greedy_completions(model, tokenizer, QUESTIONS)
        asked, sampled[name] = sampled_completions(
            model, tokenizer, QUESTIONS, samples=4,
            temperature=RLHF_PPO_HYPERPARAMETERS["temperature"])
        scores[name] = mean(reward_scores(reward_model, asked, sampled[name]))
    ppo_rewards = [round(e["data"]["reward_mean"], 2) for e in rlhf["events"]
                   if e["type"] == "metrics" and e["data"].get("stage") == "ppo"]
    print(f"\nRLHF reward-model score of sampled responses: SFT policy {scores['sft']:.2f}, "
          f"PPO policy {scores['ppo']:.2f} (preferred answers {mean(chosen):.2f}, others "
          f"{mean(rejected):.2f}); greedy answers right: "
          f"{ {n: right_answers(g) for n, g in greedy.items()} }, ending in '!': "
          f"{ {n: exclaimed(g) for n, g in greedy.items()} }; sampled ending in '!': "
          f"{ {n: exclaimed(s) for n, s in sampled.items()} }; PPO reward by update "
          f"{ppo_rewards}")
    # The SFT stage learned its data; PPO kept the answers and moved to the preferred ending.
    assert right_answers(greedy["sft"]) >= 0.75, greedy["sft"]
    assert right_answers(greedy["ppo"]) >= 0.75, greedy["ppo"]
    assert exclaimed(greedy["ppo"]) >= exclaimed(greedy["sft"]) + 0.5, greedy
    assert scores["ppo"] > scores["sft"] + 2.0, scores
