"""Domain-adaptive pretraining (DAPT): causal LM on raw `text` rows, the loss on every token.

Packed (the default), trl's SFTTrainer concatenates the rows, each ended by EOS, and cuts
them into blocks of max_seq_length with the "wrapped" strategy, so every token trains. Not
trl's default "bfd", which drops whatever overflows a block (measured: a 12,653-token corpus
trained on 6,400), nor "bfd_split", which keeps every token too but needs padding-free
batches: one sequence of batch x length tokens whose block-diagonal mask our SDPA attention
computes in full. "wrapped" gives ordinary [batch, length] blocks in which, as in GPT-style
pretraining, a row may attend to the rows before it across their EOS.

With `packing: false` each row trains on its own, cut at max_seq_length; the event log says
how many tokens that cuts.
"""

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from tunesmith.spec.objectives import PretrainingMethod
from worker.data.text_corpus import token_lengths, wrapped_block_count
from worker.registry import register_objective
from worker.training.context import JobContext
from worker.training.modeling import load_tokenizer
from worker.training.saving import save_result
from worker.training.workflow import run_trainer, setup, trainable_model, trainer_arguments


@register_objective(PretrainingMethod)
def run(ctx: JobContext, method: PretrainingMethod) -> None:
    config = method.pretraining

    tokenizer = load_tokenizer(ctx)
    rows = [{"text": r["text"]} for r in ctx.rows(ctx.spec.training_file)]
    eval_rows = ([{"text": r["text"]} for r in ctx.rows(ctx.spec.validation_file)]
                 if ctx.spec.validation_file else None)
    lengths = token_lengths([r["text"] for r in rows], tokenizer)

    # Packed, the steps follow the blocks the corpus fills at the resolved sequence length.
    job = setup(ctx, config.hyperparameters, rows=len(rows),
                model_max_length=tokenizer.model_max_length,
                rows_at_length=(lambda length: wrapped_block_count(lengths, length))
                if config.packing else None)
    length = job.hp.max_seq_length
    corpus_tokens = sum(lengths)
    if config.packing:
        blocks = wrapped_block_count(lengths, length)
        ctx.event(f"Packing {len(rows):,} rows ({corpus_tokens:,} tokens with EOS) into "
                  f"{blocks:,} sequences of up to {length} tokens; every token trains",
                  data={"rows": len(rows), "corpus_tokens": corpus_tokens,
                        "tokens_per_epoch": corpus_tokens, "sequences": blocks,
                        "max_seq_length": length, "packing": "wrapped"})
    else:
        kept = sum(min(n, length) for n in lengths)
        long_rows = sum(n > length for n in lengths)
        ctx.event(f"Training {len(rows):,} rows one by one: {kept:,} of {corpus_tokens:,} tokens"
                  + (f"; {long_rows} rows are longer than max_seq_length={length} and lose "
                     f"{corpus_tokens - kept:,} tokens (set packing: true to train every token, "
                     "or raise max_seq_length)" if long_rows else ""),
                  level="warn" if long_rows else "info",
                  data={"rows": len(rows), "corpus_tokens": corpus_tokens,
                        "tokens_per_epoch": kept, "rows_truncated": long_rows,
                        "max_seq_length": length, "packing": None})

    model = trainable_model(ctx, job)

    args = trainer_arguments(
        ctx, job.hp, SFTConfig, max_length=length, dataset_text_field="text",
        packing=config.packing, packing_strategy="wrapped",
        # Language modelling: no completion or assistant mask, the loss is on every token.
        completion_only_loss=False, assistant_only_loss=False,
        evaluate=bool(eval_rows),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         processing_class=tokenizer)
    if run_trainer(ctx, trainer):
        save_result(ctx, job.plan, model, tokenizer)
