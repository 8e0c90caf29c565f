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
from worker.context import JobContext
from worker.modeling import count_parameters, load_model, load_tokenizer, torch_dtype
from worker.preference_data import check_pairs_fit, job_pairs
from worker.registry import TuningPlan, register_objective, tuning
from worker.saving import save_result
from worker.training import run_trainer, setup, trainer_arguments

REWARD_MODEL_ARTIFACT = "reward_model"


@register_objective("reward")
def run(ctx: JobContext) -> None:
    method = ctx.spec.method
    assert isinstance(method, RewardMethod)
    config = method.reward

    tokenizer = load_tokenizer(ctx)
    rows, eval_rows = job_pairs(ctx, tokenizer)

    job = setup(ctx, config.hyperparameters, rows=len(rows),
                model_max_length=tokenizer.model_max_length)
    model = load_model(ctx, job.plan, ctx.spec.tuning, precision=job.hp.precision,
                       task="seq_cls", tokenizer=tokenizer)
    model = job.plan.apply(model, ctx.spec.tuning, "seq_cls", ctx)
    trainable, total = count_parameters(model)
    ctx.event(f"Reward model from {ctx.spec.model}: {trainable:,} of {total:,} parameters "
              "train (score head included)",
              data={"trainable_parameters": trainable, "total_parameters": total})

    args = trainer_arguments(
        ctx, job.hp, RewardConfig, max_length=job.hp.max_seq_length,
        evaluate=bool(eval_rows),
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                            processing_class=tokenizer)
    keep_score_head_in_model_dtype(model, torch_dtype(job.hp.precision))
    # RewardTrainer silently drops pairs whose prompt + response exceeds max_length.
    reason = (f"prompt + response is longer than max_seq_length={job.hp.max_seq_length} "
              "tokens")
    check_pairs_fit(ctx, len(trainer.train_dataset), len(rows),
                    max_seq_length=job.hp.max_seq_length, reason=reason)
    if eval_rows:
        check_pairs_fit(ctx, len(trainer.eval_dataset), len(eval_rows),
                        max_seq_length=job.hp.max_seq_length, reason=reason,
                        field="validation_file")
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
    save_result(ctx, tuning("full"), model, tokenizer, name=REWARD_MODEL_ARTIFACT,
                task="seq_cls")
