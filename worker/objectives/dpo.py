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
from tunesmith.spec.tunings import FullTuning
from worker.data.preference_data import prepare_pairs_job
from worker.registry import register_objective
from worker.training.context import JobContext
from worker.training.modeling import load_model
from worker.training.saving import save_result
from worker.training.workflow import run_trainer, trainable_model, trainer_arguments

DEFAULT_BETA = 0.1
REFERENCE_ADAPTER = "ref"  # the name trl gives its copy of the starting adapter


@register_objective(DPOMethod)
def run(ctx: JobContext, method: DPOMethod) -> None:
    hp = method.dpo.hyperparameters
    pairs = prepare_pairs_job(ctx, hp)
    tokenizer, rows, eval_rows, job = pairs.tokenizer, pairs.rows, pairs.eval_rows, pairs.job
    beta = DEFAULT_BETA if hp.beta == "auto" else hp.beta
    ctx.record_hyperparameters({**job.hp.as_dict(), "beta": beta})
    ctx.event(f"DPO beta={beta}", data={"beta": beta})

    # A PEFT tuning's reference is a frozen copy of the starting adapter (trl adds it); full
    # tuning's is a second copy of the base model, loaded the same way.
    peft = not isinstance(ctx.spec.tuning, FullTuning)
    model = trainable_model(ctx, job, note="; the reference is " + (
        "a frozen copy of the starting adapter" if peft else "a frozen copy of the model"))
    reference = None if peft else load_model(ctx, job.plan, precision=job.hp.precision)

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
    pairs.check_kept(ctx, trainer, reason="the prompt alone fills "
                     f"max_seq_length={job.hp.max_seq_length} tokens")
    if run_trainer(ctx, trainer):
        if peft and REFERENCE_ADAPTER in model.peft_config:
            model.delete_adapter(REFERENCE_ADAPTER)
        save_result(ctx, job.plan, model, tokenizer)
