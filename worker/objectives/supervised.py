"""Instruction fine-tuning (SFT): trl's SFTTrainer on chat, prompt/completion or alpaca rows."""

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from tunesmith.spec.objectives import SupervisedMethod
from worker.data.batching import ModelShape, choose_layout, padding_free_collator
from worker.data.length_check import report_truncation, row_lengths
from worker.data.sft_data import must_split, sft_loss_options, to_sft_row
from worker.registry import register_objective
from worker.training.context import JobContext
from worker.training.modeling import count_parameters, load_tokenizer
from worker.training.saving import save_result
from worker.training.workflow import run_trainer, setup, trainable_model, trainer_arguments


@register_objective(SupervisedMethod)
def run(ctx: JobContext, method: SupervisedMethod) -> None:
    config = method.supervised

    tokenizer = load_tokenizer(ctx)
    raw = ctx.rows(ctx.spec.training_file)
    raw_eval = ctx.rows(ctx.spec.validation_file) if ctx.spec.validation_file else []
    # Both files become rows of one shape (see worker/data/sft_data.py).
    split = must_split(raw + raw_eval, tokenizer, assistant_only=config.completion_only_loss)
    rows = [to_sft_row(r, tokenizer, split=split) for r in raw]
    eval_rows = [to_sft_row(r, tokenizer, split=split) for r in raw_eval] or None

    job = setup(ctx, config.hyperparameters, rows=len(rows),
                model_max_length=tokenizer.model_max_length)
    model = trainable_model(ctx, job)
    trainable, total = count_parameters(model)

    lengths = row_lengths(tokenizer, rows)
    report_truncation(ctx, lengths, job.hp.max_seq_length)
    layout = choose_layout(
        config.padding_free, tuning=ctx.spec.tuning.type,
        lengths=[min(n, job.hp.max_seq_length) for n in lengths],
        batch_size=max(1, job.hp.batch_size // ctx.world_size),
        shape=ModelShape.of(model, parameters=total, trainable=trainable), seed=ctx.seed)
    ctx.event(f"Batches: {'padding-free' if layout.padding_free else 'padded'} "
              f"({layout.reason})", data={"batches": layout.as_event()})

    args = trainer_arguments(
        ctx, job.hp, SFTConfig, max_length=job.hp.max_seq_length,
        **sft_loss_options(rows, tokenizer, completion_only=config.completion_only_loss),
        evaluate=bool(eval_rows),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         processing_class=tokenizer,
                         data_collator=(padding_free_collator(tokenizer)
                                        if layout.padding_free else None))
    if run_trainer(ctx, trainer):
        save_result(ctx, job.plan, model, tokenizer)
