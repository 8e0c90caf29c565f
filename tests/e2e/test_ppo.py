"""PPO on real tiny Llama models (no mocks): the reward must go up, stop must stop, LoRA must
leave the base weights alone, and the reward-model path must run."""

import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from worker.rl.ppo import PPOSettings, _truncate_after_eos, train_ppo

RESPONSE_LENGTH = 8
TARGET = {f"t{i}" for i in range(3, 11)}  # 8 of 64 ids: about 1/8 of random tokens at the start
METRIC_KEYS = {
    "step", "episode", "reward_mean", "kl", "policy_loss", "value_loss", "loss", "entropy",
    "clipfrac", "learning_rate", "tokens_per_second",
}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Matmuls this small run many times faster on one thread than two on a busy 2-core box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tokenizer():
    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, **{f"t{i}": i for i in range(3, 64)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>"
    )


def _config(**extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, **extra,
    )  # fmt: skip


def _models(seed: int, **extra) -> tuple[LlamaForCausalLM, LlamaForSequenceClassification]:
    torch.manual_seed(seed)
    return LlamaForCausalLM(_config(**extra)), LlamaForSequenceClassification(
        _config(num_labels=1, **extra)
    )


def _prompts(seed: int, n: int = 32) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 6, (n,), generator=g).tolist()
    return [
        " ".join(f"t{i}" for i in torch.randint(11, 64, (k,), generator=g).tolist())
        for k in lengths
    ]


def target_fraction(prompts: list[str], completions: list[str]) -> torch.Tensor:
    """Verifiable reward: share of the response slots holding a target token."""
    return torch.tensor(
        [sum(t in TARGET for t in c.split()) / RESPONSE_LENGTH for c in completions]
    )


def _settings(**overrides) -> PPOSettings:
    base = {
        "total_episodes": 320, "rollout_batch_size": 16, "mini_batch_size": 8, "ppo_epochs": 4,
        "response_length": RESPONSE_LENGTH, "temperature": 1.0, "kl_coef": 0.01,
        "learning_rate": 1e-2,
    }  # fmt: skip
    return PPOSettings(**{**base, **overrides})


def _assert_learned(logs: list[dict[str, float]]) -> None:
    first = sum(m["reward_mean"] for m in logs[:3]) / 3
    last = sum(m["reward_mean"] for m in logs[-3:]) / 3
    assert last >= first + 0.2 and last >= 1.5 * first, (first, last)
    assert all(math.isfinite(m["kl"]) for m in logs)


def test_truncate_after_eos_keeps_first_eos_and_pads_the_rest():
    responses = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8]])
    out, mask, has_eos = _truncate_after_eos(responses, eos_id=1, pad_id=0)
    assert out.tolist() == [[5, 1, 0, 0], [5, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert has_eos.tolist() == [True, False]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_policy_learns_to_emit_target_tokens(seed):
    policy, value_model = _models(seed)
    logs: list[dict[str, float]] = []
    final = train_ppo(
        policy=policy, ref_policy=None, value_model=value_model, reward_model=None,
        tokenizer=_tokenizer(), prompts=_prompts(seed), settings=_settings(seed=seed),
        on_log=logs.append, reward_fn=target_fraction,
    )  # fmt: skip
    assert len(logs) == 20 and final == logs[-1]
    assert final.keys() >= METRIC_KEYS
    assert [m["step"] for m in logs] == list(range(1, 21))
    assert logs[-1]["episode"] == 320
    assert logs[0]["learning_rate"] == pytest.approx(1e-2)
    assert logs[-1]["learning_rate"] == pytest.approx(1e-2 / 20)  # linear decay, per update
    _assert_learned(logs)


def test_should_stop_ends_training_between_updates():
    policy, value_model = _models(0)
    logs: list[dict[str, float]] = []
    final = train_ppo(
        policy=policy, ref_policy=None, value_model=value_model, reward_model=None,
        tokenizer=_tokenizer(), prompts=_prompts(0), settings=_settings(total_episodes=160),
        on_log=logs.append, should_stop=lambda: len(logs) >= 2, reward_fn=target_fraction,
    )  # fmt: skip
    assert len(logs) == 2 and final["step"] == 2
    assert policy.training  # modes are restored


def test_lora_policy_learns_with_adapter_as_reference_and_base_untouched():
    # A larger init stands in for pretrained weights: with the default 0.02 the frozen lm_head
    # is so small that no adapter on the hidden layers can move the logits far.
    policy, value_model = _models(0, initializer_range=0.2)
    policy = get_peft_model(policy, LoraConfig(r=8, target_modules="all-linear"))
    base_before = {k: v.clone() for k, v in policy.named_parameters() if "lora_" not in k}
    lora_before = {k: v.clone() for k, v in policy.named_parameters() if "lora_" in k}
    logs: list[dict[str, float]] = []
    train_ppo(
        policy=policy, ref_policy=None, value_model=value_model, reward_model=None,
        tokenizer=_tokenizer(), prompts=_prompts(0),
        settings=_settings(total_episodes=480, learning_rate=3e-2),
        on_log=logs.append, reward_fn=target_fraction,
    )  # fmt: skip
    _assert_learned(logs)
    after = dict(policy.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in base_before.items())
    assert any(not torch.equal(after[k], v) for k, v in lora_before.items())


def test_reward_model_path_runs_one_update():
    policy, value_model = _models(0)
    torch.manual_seed(1)
    reward_model = LlamaForSequenceClassification(_config(num_labels=1))
    logs: list[dict[str, float]] = []
    final = train_ppo(
        policy=policy, ref_policy=copy.deepcopy(policy), value_model=value_model,
        reward_model=reward_model, tokenizer=_tokenizer(), prompts=_prompts(0),
        settings=_settings(total_episodes=8, rollout_batch_size=8, mini_batch_size=4,
                           missing_eos_penalty=1.0),
        on_log=logs.append,
    )  # fmt: skip
    assert len(logs) == 1
    assert final.keys() >= METRIC_KEYS
    assert all(math.isfinite(v) for v in final.values())
    assert final["score_mean"] <= final["reward_mean"]  # the penalty only subtracts


def test_first_ratio_is_exactly_one_when_nothing_is_learned():
    # Rollout log-probs come from the same forward as training, so with lr=0 the PPO ratio is 1.
    policy, value_model = _models(0)
    weights = {k: v.clone() for k, v in policy.state_dict().items()}
    final = train_ppo(
        policy=policy, ref_policy=None, value_model=value_model, reward_model=None,
        tokenizer=_tokenizer(), prompts=_prompts(0),
        settings=_settings(total_episodes=16, learning_rate=0.0), reward_fn=target_fraction,
    )  # fmt: skip
    assert final["approx_kl"] < 1e-10 and final["clipfrac"] == 0.0
    assert abs(final["kl"]) < 1e-4  # the deep-copied reference equals the untouched policy
    assert all(torch.equal(policy.state_dict()[k], v) for k, v in weights.items())
