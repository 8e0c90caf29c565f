"""Direct preference optimisation: trl's DPOTrainer on `prompt`/`chosen`/`rejected` rows.

The policy learns to raise log π(chosen) - log π(rejected) relative to a frozen reference,
the model it starts from; `beta` ("auto": 0.1) sets how hard the reference pulls back.

The reference: for LoRA the tuning wraps the model before the trainer sees it, and given a
PeftModel without a ref_model, trl (1.16) adds an adapter "ref" that is a frozen copy of the
starting adapter and computes the reference with it (a fresh LoRA adapter is the base model
exactly). That copy is deleted before saving, so the artifact is the one trained adapter.
For full fine-tuning the reference is a second copy of the base model, loaded the same way.
"""

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from tunesmith.spec.objectives import DPOMethod
from worker.context import JobContext
from worker.modeling import count_parameters, load_model, load_tokenizer
from worker.preference_data import check_pairs_fit, job_pairs
from worker.registry import register_objective
from worker.saving import save_result
from worker.training import run_trainer, setup, trainer_arguments

DEFAULT_BETA = 0.1
REFERENCE_ADAPTER = "ref"  # the name trl gives its copy of the starting adapter


@register_objective("dpo")
def run(ctx: JobContext) -> None:
    method = ctx.spec.method
    assert isinstance(method, DPOMethod)
    config = method.dpo

    tokenizer = load_tokenizer(ctx)
    rows, eval_rows = job_pairs(ctx, tokenizer)

    job = setup(ctx, config.hyperparameters, rows=len(rows),
                model_max_length=tokenizer.model_max_length)
    beta = DEFAULT_BETA if config.hyperparameters.beta == "auto" else config.hyperparameters.beta
    if not ctx.stage:
        ctx.update_job(hyperparameters={**job.hp.as_dict(), "beta": beta})
    ctx.event(f"DPO beta={beta}", data={"beta": beta})

    model = load_model(ctx, job.plan, ctx.spec.tuning, precision=job.hp.precision)
    model = job.plan.apply(model, ctx.spec.tuning, "causal_lm", ctx)
    peft = hasattr(model, "peft_config")
    reference = None if peft else load_model(ctx, job.plan, ctx.spec.tuning,
                                             precision=job.hp.precision)
    trainable, total = count_parameters(model)
    reference_is = ("a frozen copy of the starting adapter" if peft
                    else "a frozen copy of the model")
    ctx.event(f"Model {ctx.spec.model}: {trainable:,} of {total:,} parameters train; the "
              f"reference is {reference_is}",
              data={"trainable_parameters": trainable, "total_parameters": total})

    args = trainer_arguments(
        ctx, job.hp, DPOConfig, max_length=job.hp.max_seq_length, beta=beta,
        evaluate=bool(eval_rows),
    )
    trainer = DPOTrainer(model=model, ref_model=reference, args=args,
                         train_dataset=Dataset.from_list(rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         processing_class=tokenizer)
    # DPOTrainer drops pairs whose prompt leaves no room for a response (longer responses
    # are cut at max_length, not dropped).
    reason = f"the prompt alone fills max_seq_length={job.hp.max_seq_length} tokens"
    check_pairs_fit(ctx, len(trainer.train_dataset), len(rows),
                    max_seq_length=job.hp.max_seq_length, reason=reason)
    if eval_rows:
        check_pairs_fit(ctx, len(trainer.eval_dataset), len(eval_rows),
                        max_seq_length=job.hp.max_seq_length, reason=reason,
                        field="validation_file")
    if run_trainer(ctx, trainer):
        if peft and REFERENCE_ADAPTER in model.peft_config:
            model.delete_adapter(REFERENCE_ADAPTER)
        save_result(ctx, job.plan, model, tokenizer)
