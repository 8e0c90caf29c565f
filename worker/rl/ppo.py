"""RLHF PPO for causal language models, built directly on transformers and peft.

trl dropped ``PPOTrainer`` in 1.13 and we keep trl current for SFT/DPO/GRPO/Reward, so PPO
lives here. It follows trl 1.12's PPOTrainer and "The N Implementation Details of RLHF with PPO":

1. Rollout (no grad): sample one response per prompt from the policy; score prompt+response
   with a reward model (at the last attended token) or a ``reward_fn``; record per-token
   log-probs of the policy and of a frozen reference, and per-token values of the value model.
2. Per-token reward ``-kl_coef * (logp - ref_logp)`` (k1 KL estimator) plus the scalar score on
   the last response token; GAE(gamma, lam) gives returns and (whitened) advantages.
3. ``ppo_epochs`` passes over shuffled mini-batches minimising the clipped surrogate policy loss
   plus ``vf_coef`` times the clipped value loss.

Deliberate differences from trl: attention masks come from the tokenizer and the first EOS, not
from ``ids != pad_token_id`` (so tokenizers with ``pad == eos`` keep the EOS attended); the score
sits on the last real response token, not one past it; rollout log-probs come from the same
forward pass as training (so the first PPO ratio is exactly 1); ``should_stop`` is honoured.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch import nn
from transformers import GenerationConfig


@dataclass
class PPOSettings:
    """Hyper-parameters of :func:`train_ppo`; names and defaults follow trl 1.12's PPOConfig."""

    learning_rate: float = 1e-5
    total_episodes: int = 64  # prompts sampled in all
    rollout_batch_size: int = 8  # prompts per rollout
    mini_batch_size: int = 4
    ppo_epochs: int = 4
    response_length: int = 16
    temperature: float = 0.7
    kl_coef: float = 0.05
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = None
    max_grad_norm: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` on settings that would make the loop meaningless or crash."""
        sizes = ("total_episodes", "rollout_batch_size", "mini_batch_size", "ppo_epochs")
        for name in (*sizes, "response_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0: PPO rollouts are sampled")


@dataclass
class _Rollout:
    """One rollout batch; per-token tensors are (batch, response_len), zero past the first EOS."""

    ids: torch.Tensor  # left-padded prompt + truncated response
    mask: torch.Tensor  # attention mask of ``ids``
    ctx: int  # prompt width; responses start here
    responses: torch.Tensor
    resp_mask: torch.Tensor  # float, 1 up to and including the first EOS
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    raw_scores: torch.Tensor  # reward model / reward_fn output
    scores: torch.Tensor  # after missing_eos_penalty
    kl: torch.Tensor
    has_eos: torch.Tensor


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean, n = _masked_mean(x, mask), mask.sum()
    var = _masked_mean((x - mean) ** 2, mask) * (n / (n - 1) if n > 1 else 1.0)  # unbiased
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _inputs(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    # Explicit position ids so left padding does not shift the real tokens' positions.
    dev, pos = _device(model), (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "position_ids": pos.to(dev)}


def _response_logprobs(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, ctx: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the response tokens ``ids[:, ctx:]`` at ``temperature``, and the logits."""
    logits = model(**_inputs(model, ids, mask), use_cache=False).logits
    # Slice before upcasting: only response positions matter and fp32 vocab logits are large.
    logits = logits[:, ctx - 1 : -1].float().to(ids.device) / temperature
    logprobs = logits.log_softmax(-1).gather(2, ids[:, ctx:].unsqueeze(-1)).squeeze(-1)
    return logprobs, logits


def _token_scores(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token output of a ``*ForSequenceClassification`` (num_labels=1) head: (batch, len)."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(**_inputs(model, ids, mask), use_cache=False).last_hidden_state
    return model.score(hidden).squeeze(-1).float().to(ids.device)


def _truncate_after_eos(
    responses: torch.Tensor, eos_id: int | None, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep responses up to and including the first EOS: (responses, float mask, has_eos)."""
    is_eos = responses == eos_id if eos_id is not None else torch.zeros_like(responses).bool()
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0  # strictly after the first EOS
    return responses.masked_fill(after_eos, pad_id), (~after_eos).float(), is_eos.any(1)


def _in_chunks(fn: Callable[[slice], torch.Tensor], n: int, size: int) -> torch.Tensor:
    # Rollout forwards go mini-batch by mini-batch, so a big rollout batch never needs
    # full-vocabulary logits for every sequence at once.
    return torch.cat([fn(slice(i, i + size)) for i in range(0, n, size)])


def _disable_dropout(model: nn.Module) -> None:
    # Dropout would make the PPO ratio noisy (not 1 on the first mini-batch); trl zeroes it too.
    # We keep train() mode for updates so gradient checkpointing still works on big models.
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def _prompt_stream(prompts: list[str], generator: torch.Generator) -> Iterator[str]:
    while True:  # reshuffled every pass, like a repeated DataLoader(shuffle=True)
        for i in torch.randperm(len(prompts), generator=generator).tolist():
            yield prompts[i]


@torch.no_grad()
def _rollout(
    batch: list[str],
    policy: nn.Module,
    ref_policy: nn.Module | None,
    value_model: nn.Module,
    reward_model: nn.Module | None,
    reward_fn: Callable[[list[str], list[str]], torch.Tensor] | None,
    tokenizer,
    gen_config: GenerationConfig,
    s: PPOSettings,
) -> _Rollout:
    device = _device(policy)
    enc = tokenizer(batch, return_tensors="pt", padding=True, padding_side="left")
    q_ids, q_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    ctx, n, chunk = q_ids.shape[1], len(batch), s.mini_batch_size
    seqs = policy.generate(input_ids=q_ids, attention_mask=q_mask, generation_config=gen_config)
    responses, resp_mask, has_eos = _truncate_after_eos(
        seqs[:, ctx:], tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    ids = torch.cat([q_ids, responses], 1)
    mask = torch.cat([q_mask, resp_mask.long()], 1)
    resp_len = resp_mask.sum(1).long()  # >= 1: the first token is never after an EOS
    rows = torch.arange(n, device=device)

    def logprobs(model: nn.Module) -> torch.Tensor:
        return _in_chunks(
            lambda sl: _response_logprobs(model, ids[sl], mask[sl], ctx, s.temperature)[0], n, chunk
        )

    def token_scores(model: nn.Module) -> torch.Tensor:
        return _in_chunks(lambda sl: _token_scores(model, ids[sl], mask[sl]), n, chunk)

    policy_logprobs = logprobs(policy)
    if ref_policy is None:  # PEFT policy: the base model with the adapter switched off
        with policy.disable_adapter():
            ref_logprobs = logprobs(policy)
    else:
        ref_logprobs = logprobs(ref_policy)
    values = token_scores(value_model)[:, ctx - 1 : -1] * resp_mask
    if reward_fn is not None:
        completions = tokenizer.batch_decode(responses, skip_special_tokens=True)
        raw = torch.as_tensor(reward_fn(batch, completions), dtype=torch.float32)
        raw = raw.reshape(-1).to(device)
    else:  # last attended token: the response follows the left-padded prompt contiguously
        raw = token_scores(reward_model)[rows, ctx - 1 + resp_len]
    scores = raw.clone()
    if s.missing_eos_penalty is not None:
        scores[~has_eos] -= s.missing_eos_penalty

    kl = (policy_logprobs - ref_logprobs) * resp_mask  # k1 estimator, per token
    rewards = -s.kl_coef * kl
    rewards[rows, resp_len - 1] += scores
    if s.whiten_rewards:
        rewards = _masked_whiten(rewards, resp_mask, shift_mean=False) * resp_mask
    advantages, last_gae = torch.zeros_like(rewards), torch.zeros(n, device=device)
    length = rewards.shape[1]
    for t in reversed(range(length)):
        # Past the end rewards and values are 0, so GAE starts fresh at each sequence's end.
        next_value = values[:, t + 1] if t + 1 < length else 0.0
        delta = rewards[:, t] + s.gamma * next_value - values[:, t]
        last_gae = delta + s.gamma * s.lam * last_gae
        advantages[:, t] = last_gae
    returns = advantages + values
    advantages = _masked_whiten(advantages, resp_mask) * resp_mask
    return _Rollout(
        ids, mask, ctx, responses, resp_mask, policy_logprobs, values, advantages, returns,
        raw, scores, kl, has_eos,
    )  # fmt: skip


def train_ppo(
    *,
    policy: nn.Module,
    ref_policy: nn.Module | None,
    value_model: nn.Module,
    reward_model: nn.Module | None,
    tokenizer,
    prompts: list[str],
    settings: PPOSettings,
    on_log: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    reward_fn: Callable[[list[str], list[str]], torch.Tensor] | None = None,
    start_update: int = 0,
    optimizer_state: dict | None = None,
    on_update_end: Callable[[int, torch.optim.Optimizer], None] | None = None,
) -> dict[str, float]:
    """Train ``policy`` and ``value_model`` in place with PPO; return the last update's metrics.

    ``prompts`` are final text (any chat template already applied); they are left-padded.
    ``ref_policy=None`` means the PEFT policy with its adapter disabled, else a frozen deep copy.
    ``reward_fn(prompts, completions)`` wins over ``reward_model`` when both are given.
    ``on_log`` gets one metrics dict per update; ``should_stop`` is polled before each update.
    Reseeds torch's global RNG with ``settings.seed`` (generation samples from it).

    Resuming: ``start_update`` updates are already done (the caller has loaded their weights
    into ``policy`` and ``value_model``); the loop continues at the next one with the learning
    rate, episode count and step numbers where they were, and ``optimizer_state`` (from
    ``optimizer.state_dict()``) restores AdamW's moments. ``on_update_end(step, optimizer)``
    runs after each update's ``on_log``, when the models are consistent: the place to
    checkpoint. The resumed run samples fresh prompts and responses rather than replaying the
    interrupted run's random stream.
    """
    s = settings
    s.validate()
    if not prompts:
        raise ValueError("prompts must not be empty")
    if reward_model is None and reward_fn is None:
        raise ValueError("pass a reward_model or a reward_fn")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer needs a pad token: prompts are left-padded for generate")
    if ref_policy is None and not isinstance(policy, PeftModel):
        ref_policy = copy.deepcopy(policy).requires_grad_(False)
    models = [m for m in (policy, ref_policy, value_model, reward_model) if m is not None]
    was_training = [m.training for m in models]
    for m in (policy, ref_policy, value_model):
        if m is not None:
            _disable_dropout(m)

    # One AdamW over policy + value parameters, as trl (one wrapped module, one optimiser): the
    # schedule and gradient clipping are shared. eps=1e-5 per the PPO implementation details.
    trainable = (p for m in (policy, value_model) for p in m.parameters() if p.requires_grad)
    params = list({id(p): p for p in trainable}.values())
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, eps=1e-5)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        for group in optimizer.param_groups:  # the schedule below sets the rate from the base
            group["lr"] = group["initial_lr"] = s.learning_rate
    num_updates = math.ceil(s.total_episodes / s.rollout_batch_size)
    if not 0 <= start_update <= num_updates:
        raise ValueError(f"start_update must be in [0, {num_updates}]")
    # Linear decay to 0 over the updates, stepped once per update, as trl's default schedule
    # (counted from update 0 also when resuming).
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: 1.0 - (k + start_update) / num_updates
    )
    gen_config = GenerationConfig(
        max_new_tokens=s.response_length,
        do_sample=True,
        temperature=s.temperature,
        top_k=0,
        top_p=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # A resumed run reseeds apart from the first, so it does not replay the first updates' draws.
    torch.manual_seed(s.seed + start_update)
    shuffle = torch.Generator().manual_seed(s.seed + start_update)
    stream = _prompt_stream(prompts, shuffle)

    metrics: dict[str, float] = {}
    episode = min(start_update * s.rollout_batch_size, s.total_episodes)
    try:
        for step in range(start_update + 1, num_updates + 1):
            if should_stop is not None and should_stop():
                break
            start = time.perf_counter()
            size = min(s.rollout_batch_size, s.total_episodes - episode)
            batch = [next(stream) for _ in range(size)]
            episode += len(batch)
            for m in models:
                m.eval()
            r = _rollout(
                batch, policy, ref_policy, value_model, reward_model, reward_fn, tokenizer,
                gen_config, s,
            )  # fmt: skip

            policy.train()
            value_model.train()
            lr = scheduler.get_last_lr()[0]
            stats: dict[str, list[float]] = {}
            for _ in range(s.ppo_epochs):
                perm = torch.randperm(len(batch), generator=shuffle).to(r.ids.device)
                for i in range(0, len(batch), s.mini_batch_size):
                    idx = perm[i : i + s.mini_batch_size]
                    for key, value in _ppo_step(r, idx, policy, value_model, params, optimizer, s):
                        stats.setdefault(key, []).append(value)
            scheduler.step()

            mean = {k: sum(v) / len(v) for k, v in stats.items()}
            resp_len = r.resp_mask.sum(1)
            non_score = (-s.kl_coef * r.kl).sum(1)
            metrics = {
                "step": float(step),
                "episode": float(episode),
                "reward_mean": r.raw_scores.mean().item(),
                "score_mean": r.scores.mean().item(),  # after missing_eos_penalty
                "kl": r.kl.sum(1).mean().item(),
                "non_score_reward": non_score.mean().item(),
                "rlhf_reward": (r.scores + non_score).mean().item(),
                **mean,
                "loss": mean["policy_loss"] + s.vf_coef * mean["value_loss"],
                "response_length": resp_len.mean().item(),
                "eos_fraction": r.has_eos.float().mean().item(),
                "learning_rate": lr,
                # End-to-end throughput: sampled response tokens per second of the whole update.
                "tokens_per_second": resp_len.sum().item() / (time.perf_counter() - start),
            }
            if on_log is not None:
                on_log(metrics)
            if on_update_end is not None:
                on_update_end(step, optimizer)
    finally:
        for m, flag in zip(models, was_training, strict=True):
            m.train(flag)
    return metrics


def _ppo_step(
    r: _Rollout,
    idx: torch.Tensor,
    policy: nn.Module,
    value_model: nn.Module,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    s: PPOSettings,
) -> list[tuple[str, float]]:
    """One optimiser step on mini-batch ``idx`` of the rollout; returns its statistics."""
    ids, mask, m = r.ids[idx], r.mask[idx], r.resp_mask[idx]
    new_logprobs, logits = _response_logprobs(policy, ids, mask, r.ctx, s.temperature)
    vpred = _token_scores(value_model, ids, mask)[:, r.ctx - 1 : -1]
    old_v, ret, adv = r.values[idx], r.returns[idx], r.advantages[idx]
    v_clipped = old_v + (vpred - old_v).clamp(-s.cliprange_value, s.cliprange_value)
    vf1, vf2 = (vpred - ret) ** 2, (v_clipped - ret) ** 2
    value_loss = 0.5 * _masked_mean(torch.max(vf1, vf2), m)
    log_ratio = new_logprobs - r.logprobs[idx]
    ratio = log_ratio.exp()
    pg1, pg2 = -adv * ratio, -adv * ratio.clamp(1.0 - s.cliprange, 1.0 + s.cliprange)
    policy_loss = _masked_mean(torch.max(pg1, pg2), m)
    optimizer.zero_grad(set_to_none=True)
    (policy_loss + s.vf_coef * value_loss).backward()
    nn.utils.clip_grad_norm_(params, s.max_grad_norm)
    optimizer.step()
    with torch.no_grad():
        entropy = torch.logsumexp(logits, -1) - (logits.softmax(-1) * logits).sum(-1)
        return [
            ("policy_loss", policy_loss.item()),
            ("value_loss", value_loss.item()),
            ("entropy", _masked_mean(entropy, m).item()),
            ("clipfrac", _masked_mean((pg2 > pg1).float(), m).item()),
            ("value_clipfrac", _masked_mean((vf2 > vf1).float(), m).item()),
            ("approx_kl", 0.5 * _masked_mean(log_ratio**2, m).item()),
        ]
