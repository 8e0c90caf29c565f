"""RLHF stage 3, PPO: the policy samples responses to the training file's prompts, a reward
model scores them, and our PPO loop (worker/rl/ppo.py; trl removed its PPOTrainer in 1.13)
raises the score while a per-token KL penalty holds the policy near its reference.

The models:
- policy: the base model under the job's tuning (a LoRA adapter, or every weight), or, as
  RLHF's third stage, the SFT stage's result (`start_from`);
- reference: the starting policy, frozen (a fresh adapter switched off is the base itself;
  a started-from adapter or a full model needs a frozen copy);
- reward model: `method.ppo.reward_model`, frozen; it scores the row's prompt + response
  as the reward job trained it (worker/rl/reward_model.py);
- value model: a one-output classifier initialised from the reward model, as trl does
  (from the base model where the reward model reads another vocabulary), under the job's
  tuning (LoRA plus a trained score head, or every weight).

Hyperparameters: `batch_size` prompts per rollout, split into `gradient_accumulation_steps`
mini-batches for the `ppo_epochs` optimisation passes; `total_episodes` "auto" is n_epochs
passes over the prompts (or max_steps rollouts). One update = one rollout and its passes: the
events, progress and checkpoints count updates.
"""

import copy
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tunesmith.spec.objectives import PPOHyperparameters, PPOMethod
from worker.registry import TuningPlan, register_objective
from worker.rl.checkpoints import load_checkpoint, save_checkpoint
from worker.rl.ppo import PPOSettings, train_ppo
from worker.rl.prompts import policy_prompts
from worker.rl.reward_model import RewardScorer, load_reward_tokenizer, reward_model_location
from worker.training.context import JobContext
from worker.training.hyperparameters import Resolved
from worker.training.modeling import count_parameters, frozen, load_model, load_tokenizer
from worker.training.saving import save_result
from worker.training.workflow import setup


@register_objective(PPOMethod)
def run(ctx: JobContext, method: PPOMethod) -> None:
    config = method.ppo
    train_policy(ctx, ctx.rows(ctx.spec.training_file), config.hyperparameters,
                 reward_model=reward_model_location(config.reward_model))


def train_policy(ctx: JobContext, rows: list[dict[str, Any]], hp: PPOHyperparameters, *,
                 reward_model: str, start_from: Path | None = None,
                 prompt_field: str = "training_file") -> bool:
    """PPO on the prompts of `rows` against the reward model at `reward_model`; saves the
    policy. False if stopped (a checkpoint then holds the last update)."""
    tokenizer = load_tokenizer(ctx)
    prompts = policy_prompts(rows, tokenizer, field=prompt_field)

    job = setup(ctx, hp, rows=len(prompts), model_max_length=tokenizer.model_max_length)
    settings = ppo_settings(hp, job.hp, prompts=len(prompts), seed=ctx.seed)
    num_updates = math.ceil(settings.total_episodes / settings.rollout_batch_size)
    save_every = hp.save_steps if hp.save_steps != "auto" else max(1, math.ceil(num_updates / 5))
    resolved = {**job.hp.as_dict(), **asdict(settings), "total_steps": num_updates,
                "save_steps": save_every, "logging_steps": 1}
    ctx.record_hyperparameters(resolved)
    ctx.event(f"PPO: {num_updates} updates of {settings.rollout_batch_size} "
              f"prompts ({settings.total_episodes} episodes), {settings.ppo_epochs} passes in "
              f"mini-batches of {settings.mini_batch_size}, kl_coef={settings.kl_coef}",
              data={"ppo": asdict(settings), "total_steps": num_updates})

    reward_tokenizer = load_reward_tokenizer(reward_model, tokenizer)
    scorer = RewardScorer(
        frozen(load_model(ctx, job.plan, folder=reward_model, precision=job.hp.precision,
                               task="seq_cls", tokenizer=reward_tokenizer)),
        reward_tokenizer, prompts, batch_size=settings.mini_batch_size)
    policy, reference = load_policy(ctx, job.plan, precision=job.hp.precision,
                                    start_from=start_from)
    same_vocabulary = reward_tokenizer.get_vocab() == tokenizer.get_vocab()
    value = load_value_model(ctx, job.plan, precision=job.hp.precision, tokenizer=tokenizer,
                             init_from=reward_model if same_vocabulary else None)
    trainable, total = count_parameters(policy)
    value_trainable, _ = count_parameters(value)
    ctx.event(f"Policy {ctx.spec.model}: {trainable:,} of {total:,} parameters "
              f"train; value model: {value_trainable:,} (initialised from "
              f"{'the reward model' if same_vocabulary else 'the base model'})",
              data={"trainable_parameters": trainable, "total_parameters": total,
                    "value_trainable_parameters": value_trainable})

    # What a checkpoint holds; the value model trains inside its PEFT wrapper, if any.
    models = {"policy": policy, "value": value}
    start, optimizer_state, tokens = 0, None, 0
    resume = ctx.latest_checkpoint()
    if resume is not None:
        state, optimizer_state = load_checkpoint(resume, models)
        start, tokens = int(state["global_step"]), int(state.get("trained_tokens", 0))
        ctx.event(f"Resuming from {resume.name}", level="warn",
                  data={"resume_from_step": start})
    where = f" from step {start}" if start else ""
    ctx.event(f"Training{where} to step {num_updates}",
              data={"step": start, "total_steps": num_updates})

    events = PPOEvents(ctx, models, total_steps=num_updates, save_every=save_every,
                       prompts=len(prompts), start_episode=start * settings.rollout_batch_size,
                       start_tokens=tokens)
    train_ppo(policy=policy, ref_policy=reference, value_model=unwrap(value),
              reward_model=None, reward_fn=scorer, tokenizer=tokenizer,
              prompts=[p.policy_input for p in prompts], settings=settings,
              on_log=events.on_log, on_update_end=events.on_update_end,
              should_stop=ctx.stop.is_set, start_update=start, optimizer_state=optimizer_state)
    if ctx.stop.is_set():
        return False
    save_result(ctx, job.plan, policy, tokenizer)
    return True


def ppo_settings(hp: PPOHyperparameters, resolved: Resolved, *, prompts: int,
                 seed: int) -> PPOSettings:
    rollout = resolved.batch_size
    if hp.total_episodes != "auto":
        episodes = hp.total_episodes
    elif resolved.max_steps > 0:
        episodes = resolved.max_steps * rollout
    else:
        episodes = resolved.n_epochs * prompts
    return PPOSettings(
        learning_rate=resolved.learning_rate, total_episodes=episodes,
        rollout_batch_size=rollout,
        mini_batch_size=max(1, math.ceil(rollout / resolved.gradient_accumulation_steps)),
        ppo_epochs=hp.ppo_epochs, response_length=hp.response_length,
        temperature=hp.temperature, kl_coef=hp.kl_coef, cliprange=hp.cliprange,
        cliprange_value=hp.cliprange_value, vf_coef=hp.vf_coef,
        max_grad_norm=1.0, seed=seed,
    )


def load_policy(ctx: JobContext, plan: TuningPlan, *, precision: str,
                start_from: Path | None) -> tuple[Any, Any]:
    """(policy, reference); reference None means "the policy with its adapter switched off"."""
    tuning = ctx.spec.tuning

    def fresh() -> Any:
        return plan.apply(load_model(ctx, plan, precision=precision), tuning,
                          "causal_lm", ctx)

    if start_from is None:
        policy = fresh()
        peft = hasattr(policy, "peft_config")
        return policy, None if peft else frozen(copy.deepcopy(policy))
    if (start_from / "adapter_config.json").is_file():
        # Built as the tuning builds it (QLoRA quantises and prepares the base), then given
        # the started-from adapter's weights; the frozen reference is that same adapter.
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(start_from / "adapter_model.safetensors")
        policy, reference = fresh(), fresh()
        for model in (policy, reference):
            result = set_peft_model_state_dict(model, weights)
            if result.unexpected_keys:
                raise RuntimeError(f"the adapter in {start_from.name} does not fit the tuning: "
                                   f"{result.unexpected_keys[:5]}")
        return policy, frozen(reference)
    policy = plan.apply(load_model(ctx, plan, folder=start_from, precision=precision), tuning,
                        "causal_lm", ctx)
    return policy, frozen(copy.deepcopy(policy))


def load_value_model(ctx: JobContext, plan: TuningPlan, *, precision: str, tokenizer: Any,
                     init_from: str | None) -> Any:
    tuning = ctx.spec.tuning
    if init_from is not None:
        model = load_model(ctx, plan, folder=init_from, precision=precision, task="seq_cls",
                                tokenizer=tokenizer)
    else:
        model = load_model(ctx, plan, precision=precision, task="seq_cls",
                           tokenizer=tokenizer)
    return plan.apply(model, tuning, "seq_cls", ctx)


def unwrap(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (LoRA layers are injected in place, so
    it still trains them): train_ppo reads its backbone and `score` head by name."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class PPOEvents:
    """train_ppo's per-update logs as job metrics and progress; checkpoints every
    `save_every` updates, at the last one, and when asked to stop."""

    def __init__(self, ctx: JobContext, models: dict[str, Any], *, total_steps: int,
                 save_every: int, prompts: int, start_episode: int, start_tokens: int) -> None:
        self.ctx, self.models = ctx, models
        self.total_steps, self.save_every, self.prompts = total_steps, save_every, prompts
        self.last: dict[str, Any] = {}
        self.episode = start_episode
        self.tokens = start_tokens  # response tokens sampled so far
        self.clock = time.monotonic()

    def on_log(self, logs: dict[str, float]) -> None:
        now = time.monotonic()
        step, episode = int(logs["step"]), int(logs["episode"])
        data: dict[str, Any] = {"step": step, "episode": episode,
                                "epoch": round(episode / self.prompts, 4)}
        data.update({k: v for k, v in logs.items() if k not in ("step", "episode")})
        self.tokens += round(logs["response_length"] * (episode - self.episode))
        progress = {"step": step, "total_steps": self.total_steps, "epoch": data["epoch"],
                    "steps_per_second": round(1 / max(now - self.clock, 1e-9), 4)}
        self.ctx.metrics(data, progress=progress, trained_tokens=self.tokens or None)
        self.last, self.episode, self.clock = data, episode, now

    def on_update_end(self, step: int, optimizer: Any) -> None:
        if step % self.save_every and step != self.total_steps and not self.ctx.stop.is_set():
            return
        path = save_checkpoint(self.ctx.checkpoints_dir, step=step, models=self.models,
                               optimizer=optimizer,
                               state={"episode": self.episode, "total_steps": self.total_steps,
                                      "trained_tokens": self.tokens,
                                      "stage": self.ctx.stage or None})
        metrics: dict[str, Any] = {k: self.last[k] for k in ("reward_mean", "kl",
                                                              "learning_rate", "epoch")
                                   if k in self.last}
        if "loss" in self.last:
            metrics["train_loss"] = self.last["loss"]
        self.ctx.checkpoint(step, path, metrics)
