"""The tiny model of DESIGN §6: a byte-level BPE tokenizer trained on bundled text and a
two-layer Llama built from a config, saved as an ordinary model folder.

Jobs load it through the same `from_pretrained` path as a hub model, so tests and the demo
exercise the real loading code without downloading weights.
"""

from importlib import resources
from pathlib import Path

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

# `{% generation %}` marks what the assistant says, so trl can train on those tokens
# only (assistant_only_loss); an assistant turn with `weight` 0 is left unmarked, so it is
# context and no loss (worker/data/sft_data.py relies on this template reading `weight`). Tool
# definitions open the conversation as a system turn; tool calls are part of what the
# assistant says. The prompt ends with the assistant tag, so a model asked with
# add_generation_prompt=True answers straight away.
CHAT_TEMPLATE = (
    "{% macro said(message) %}{{ message['content'] or '' }}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{{ '<tool_call>' + call['function']['name'] + ' ' + call['function']['arguments']"
    " + '</tool_call>' }}{% endfor %}{{ '<|end|>' }}{% endmacro %}"
    "{% if tools %}{{ '<|system|>\nTools: ' + (tools | tojson) + '<|end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}"
    "{% if message.get('weight') == 0 %}{{ said(message) }}"
    "{% else %}{% generation %}{{ said(message) }}{% endgeneration %}{% endif %}"
    "{{ '\n' }}"
    "{% else %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def corpus_text() -> str:
    data = resources.files("tunesmith") / "data"
    return (data / "tiny_corpus.txt").read_text() + "\n" + (data / "instructions.jsonl").read_text()


def build_tokenizer(vocab_size: int = 1000):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus_text().splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<|pad|>", bos_token="<|bos|>",
        eos_token="<|end|>", model_max_length=256,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(folder: Path, *, seed: int = 0, hidden_size: int = 64,
                     num_layers: int = 2) -> Path:
    """Write the tokenizer and a randomly initialised Llama to `folder`; returns it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        # With the usual 0.02 the frozen output head is so small that its logits stay near
        # uniform whatever an adapter does (the loss cannot leave ~ln(vocab)); 0.1 lets a
        # LoRA on this two-layer model learn the bundled answers exactly.
        initializer_range=0.1,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, do_sample=False, max_new_tokens=16,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
