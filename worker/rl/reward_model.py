"""The reward model a PPO job scores its rollouts with: where it is, and how it scores.

`method.ppo.reward_model` names a finished `reward` job of the project (its
`artifacts/reward_model` folder, a complete sequence-classification model) or a model by name.
The scorer feeds the reward model exactly what RewardTrainer trained it on: the row's prompt
text + the response + EOS (preference rows are plain text; trl appends the EOS). The policy
may read the prompt through a chat template; the reward model never sees that wrapping, and
any tokenizer of its own reads the text.
"""

from pathlib import Path
from typing import Any

import torch

from tunesmith import storage
from tunesmith.model_names import resolve_model
from tunesmith.spec.objectives import ModelReference
from worker.objectives.reward import REWARD_MODEL_ARTIFACT
from worker.rl.prompts import Prompt
from worker.training.failures import InvalidData


def reward_model_location(reference: ModelReference) -> str:
    """A folder (a reward job's artifact, a model under the models root) or a hub id."""
    if reference.job is not None:
        folder = storage.fetch_job_path(reference.job, storage.artifacts_dir(reference.job)
                                        / REWARD_MODEL_ARTIFACT)
        if not (folder / "config.json").is_file():
            raise InvalidData(f"Reward job {reference.job} has no complete reward model in "
                              f"its artifacts ({REWARD_MODEL_ARTIFACT}/)",
                              "method.ppo.reward_model.job")
        return str(folder)
    assert reference.model is not None
    return resolve_model(reference.model).path_or_id


def load_reward_tokenizer(location: str | Path, fallback: Any) -> Any:
    """The reward model's own tokenizer where its folder has one, else the policy's."""
    from transformers import AutoTokenizer

    from tunesmith.settings import settings

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(location),
                                                  trust_remote_code=settings.trust_remote_code)
    except (OSError, ValueError):
        return fallback
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class RewardScorer:
    """`reward_fn(policy_inputs, completions)` for train_ppo: one score per completion."""

    def __init__(self, model: Any, tokenizer: Any, prompts: list[Prompt], *,
                 batch_size: int) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, max(1, batch_size)
        self.text_of = {p.policy_input: p.text for p in prompts}

    def texts(self, policy_inputs: list[str], completions: list[str]) -> list[str]:
        eos = self.tokenizer.eos_token or ""
        texts = []
        for policy_input, completion in zip(policy_inputs, completions, strict=True):
            text = self.text_of[policy_input] + completion
            texts.append(text if text.endswith(eos) else text + eos)
        return texts

    @torch.no_grad()
    def __call__(self, policy_inputs: list[str], completions: list[str]) -> torch.Tensor:
        texts = self.texts(policy_inputs, completions)
        device = next(self.model.parameters()).device
        scores = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt",
                                   padding=True, padding_side="right")
            # The classifier reads its score at the last non-pad token of each row.
            logits = self.model(input_ids=batch["input_ids"].to(device),
                                attention_mask=batch["attention_mask"].to(device)).logits
            scores.append(logits[:, 0].float().cpu())
        return torch.cat(scores)
