"""A merged Llama-family model folder as one GGUF file (llama.cpp, Ollama), written with the
`gguf` library.

Tensor names, the Q/K row permutation and the tokenizer metadata follow llama.cpp's
`convert_hf_to_gguf.py` (LlamaModel, and its `gpt2`-style BPE vocabulary for byte-level BPE
tokenizers such as the tiny model's); this is our own, smaller writer for the one family the
service exports.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

# The architectures we write; every one is llama.cpp's `llama` graph.
LLAMA_ARCHITECTURES = {"LlamaForCausalLM", "MistralForCausalLM"}
QUANTIZATIONS = ("f16", "q8_0")


class NotExportable(ValueError):
    """The model cannot be written as GGUF by this writer (the reason is the message)."""


def check_llama(config: dict[str, Any]) -> None:
    architectures = config.get("architectures") or []
    if not set(architectures) & LLAMA_ARCHITECTURES:
        raise NotExportable(f"gguf export supports Llama-family models only; this model is "
                            f"{', '.join(architectures) or config.get('model_type', 'unknown')}.")


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout: HF stores each head's rotary halves as [first half, second
    half]; GGUF interleaves them (convert_hf_to_gguf.py LlamaModel.permute)."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _tensor_name(name: str) -> str | None:
    """The GGUF name of an HF Llama tensor (None: not part of the graph, e.g. rotary cache)."""
    fixed = {"model.embed_tokens.weight": "token_embd.weight",
             "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    if name in fixed:
        return fixed[name]
    parts = name.split(".")
    if parts[:2] != ["model", "layers"]:
        return None
    layer, rest = parts[2], ".".join(parts[3:])
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    return f"blk.{layer}.{per_layer[rest]}" if rest in per_layer else None


def _add_tokenizer(writer: Any, folder: Path) -> None:
    """Byte-level BPE as llama.cpp's `gpt2` model: tokens by id, their types, merges, the
    special ids and the chat template."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    data = json.loads((folder / "tokenizer.json").read_text())
    model = data["model"]
    if model.get("type") != "BPE":
        raise NotExportable(f"gguf export writes byte-level BPE tokenizers; this one is "
                            f"{model.get('type')}.")
    vocab: dict[str, int] = model["vocab"]
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    size = max([*vocab.values(), *added]) + 1
    by_id = {i: tok for tok, i in vocab.items()} | {i: t["content"] for i, t in added.items()}
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            special = i in added and added[i].get("special", False)
            types.append(gguf.TokenType.CONTROL if special else
                         gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token, add in ((tokenizer.bos_token_id, writer.add_bos_token_id),
                       (tokenizer.eos_token_id, writer.add_eos_token_id),
                       (tokenizer.pad_token_id, writer.add_pad_token_id)):
        if token is not None:
            add(token)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(folder: Path, target: Path, *, quantization: str, name: str) -> None:
    """Write the model in `folder` (a merged `save_pretrained` folder) to `target`."""
    import gguf
    import torch
    from safetensors import safe_open

    config = json.loads((folder / "config.json").read_text())
    check_llama(config)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") \
        or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise NotExportable("gguf export writes unscaled rotary embeddings only; this model "
                            "scales them.")

    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta")
                                    or 10000.0))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quantization == "q8_0" \
        else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    _add_tokenizer(writer, folder)

    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[key] = handle.get_tensor(key).to(torch.float32).numpy()
    # Tied embeddings save no lm_head; llama.cpp then reuses token_embd, so none is written.
    for key, array in tensors.items():
        out = _tensor_name(key)
        if out is None:
            continue
        if key.endswith("q_proj.weight"):
            array = _permute(array, heads)
        elif key.endswith("k_proj.weight"):
            array = _permute(array, kv_heads)
        _add_tensor(writer, out, array, quantization)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tensor(writer: Any, name: str, array: np.ndarray, quantization: str) -> None:
    """Norms stay f32 (as llama.cpp keeps them); matrices are f16 or Q8_0 (blocks of 32 along
    a row; a row that does not split into blocks falls back to f16, as llama.cpp does)."""
    import gguf

    if array.ndim == 1:
        writer.add_tensor(name, array.astype(np.float32))
    elif quantization == "q8_0" and array.shape[-1] % 32 == 0:
        packed = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, packed, raw_shape=packed.shape,
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, array.astype(np.float16))
