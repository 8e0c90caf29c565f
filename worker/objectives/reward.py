"""RLHF stage 2, a reward model: trl's RewardTrainer on `prompt`/`chosen`/`rejected` rows.

The model is the causal model with a one-output score head
(`AutoModelForSequenceClassification`, num_labels=1), trained so that
score(prompt + chosen) > score(prompt + rejected). With LoRA, peft's SEQ_CLS task makes the
new score head a fully trained module (`modules_to_save`) beside the low-rank updates.

Artifacts:
- `reward_model/`: always a complete sequence-classification `save_pretrained` folder
  (for LoRA the adapter merged into the base), so a later `ppo` job or any user loads it by
  path alone: `AutoModelForSequenceClassification.from_pretrained(folder)`. PPO reads
  `jobs/<id>/artifacts/reward_model`; keep that name. (QLoRA merges into its 4-bit base, so
  that folder is a 4-bit model whose config names its bitsandbytes quantisation.)
- `adapter/` (LoRA only): the PEFT adapter with its score head, for whoever wants the small
  file; it loads onto `AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)`.

Events carry the trainer's pairwise `accuracy` (share of pairs ranked right) and `margin`
(mean score of chosen minus rejected) per logging step.
"""

from typing import Any

from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from tunesmith.spec.objectives import RewardMethod
from tunesmith.spec.tunings import FullTuning
from worker.data.preference_data import prepare_pairs_job
from worker.registry import TuningPlan, register_objective, tuning
from worker.training.context import JobContext
from worker.training.modeling import torch_dtype
from worker.training.saving import save_result
from worker.training.workflow import run_trainer, trainable_model, trainer_arguments

REWARD_MODEL_ARTIFACT = "reward_model"


@register_objective(RewardMethod)
def run(ctx: JobContext, method: RewardMethod) -> None:
    pairs = prepare_pairs_job(ctx, method.reward.hyperparameters)
    tokenizer, rows, eval_rows, job = pairs.tokenizer, pairs.rows, pairs.eval_rows, pairs.job
    model = trainable_model(ctx, job, task="seq_cls", tokenizer=tokenizer,
                            what="Reward model from", note=" (score head included)")

    args = trainer_arguments(
        ctx, job.hp, RewardConfig, max_length=job.hp.max_seq_length,
        evaluate=bool(eval_rows),
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                            processing_class=tokenizer)
    keep_score_head_in_model_dtype(model, torch_dtype(job.hp.precision))
    # RewardTrainer silently drops pairs whose prompt + response exceeds max_length.
    pairs.check_kept(ctx, trainer, reason="prompt + response is longer than "
                     f"max_seq_length={job.hp.max_seq_length} tokens")
    if run_trainer(ctx, trainer):
        save_reward_model(ctx, job.plan, model, tokenizer)


def keep_score_head_in_model_dtype(model: Any, dtype: Any) -> None:
    """trl (1.16) casts every trainable parameter of a quantized model to bf16; the LoRA
    layers cast their input, but the score head (a plain Linear under peft's
    modules_to_save) then meets fp32 hidden states on CPU and fails. Cast it back."""
    for name, param in model.named_parameters():
        if param.requires_grad and "modules_to_save" in name and param.dtype != dtype:
            param.data = param.data.to(dtype)


def save_reward_model(ctx: JobContext, plan: TuningPlan, model: Any, tokenizer: Any) -> None:
    """The adapter (PEFT tunings), then the whole seq-cls model under `reward_model/`."""
    if hasattr(model, "merge_and_unload"):
        save_result(ctx, plan, model, tokenizer, task="seq_cls")
        # Merging folds the low-rank updates into the weights and puts the trained score
        # head (a modules_to_save copy) in place of the untrained one.
        model = model.merge_and_unload()
    save_result(ctx, tuning(FullTuning), model, tokenizer, name=REWARD_MODEL_ARTIFACT,
                task="seq_cls")
