"""One request's generation: prompt ids, limits, sampling settings, stop strings, streaming."""

import threading
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from inference.loaded_models import Loaded


class PromptTooLong(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Sampling:
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None


def prompt_ids(loaded: Loaded, *, messages: list[dict[str, Any]] | None,
               prompt: str | None) -> list[int]:
    """Chat: the model's own chat template (the tiny model's is the one it trained with)."""
    tokenizer = loaded.tokenizer
    if messages is not None:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    ids = list(tokenizer(prompt or "").input_ids)
    if not ids:
        # An empty prompt (OpenAI accepts one): generate from the start-of-text token, as a
        # model does at the start of a document; generate() cannot start from nothing.
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else \
            tokenizer.eos_token_id
        ids = [start] if start is not None else []
    return ids


def context_limit(loaded: Loaded) -> int:
    config = getattr(loaded.model, "config", None)
    return int(getattr(config, "max_position_embeddings", 0) or 2048)


def new_tokens(loaded: Loaded, ids: list[int], sampling: Sampling, ceiling: int,
               prompt_param: str) -> int:
    """How many tokens may be generated; PromptTooLong names the limit when none fit."""
    limit = context_limit(loaded)
    if len(ids) >= limit:
        raise PromptTooLong(f"The prompt is {len(ids)} tokens; this model's context length is "
                            f"{limit} tokens, so a prompt may hold at most {limit - 1}.",
                            prompt_param)
    room = limit - len(ids)
    if sampling.max_tokens is None:
        return min(ceiling, room)
    if sampling.max_tokens > room:
        raise PromptTooLong(
            f"max_tokens is {sampling.max_tokens} but the prompt is {len(ids)} tokens and this "
            f"model's context length is {limit} tokens: ask for at most {room}.", "max_tokens")
    return sampling.max_tokens


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


def _generate_kwargs(loaded: Loaded, ids: list[int], sampling: Sampling,
                     max_new: int) -> dict[str, Any]:
    import torch

    where = next(loaded.model.parameters()).device
    kwargs: dict[str, Any] = {
        "input_ids": torch.tensor([ids], device=where),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=where),
        "max_new_tokens": max_new, "pad_token_id": loaded.tokenizer.pad_token_id,
    }
    if sampling.temperature > 0:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if sampling.stop:
        kwargs.update(stop_strings=sampling.stop, tokenizer=loaded.tokenizer)
    return kwargs


def _adapter_scope(loaded: Loaded, adapter: str | None) -> Any:
    """Select the request's adapter on a shared peft model; the base alone runs with the
    adapters switched off."""
    from peft import PeftModel

    if not isinstance(loaded.model, PeftModel) or loaded.adapters == {}:
        return nullcontext()
    if adapter is None:
        return loaded.model.disable_adapter()
    loaded.model.set_adapter(adapter)
    return nullcontext()


class AdapterGone(RuntimeError):
    """The adapter was evicted between lookup and generation: look it up again."""


def _run(loaded: Loaded, adapter: str | None, sampling: Sampling, kwargs: dict[str, Any]) -> Any:
    import torch

    if adapter is not None and adapter not in loaded.adapters:
        raise AdapterGone(adapter)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    with torch.inference_mode(), _adapter_scope(loaded, adapter):
        return loaded.model.generate(**kwargs)


def _answer(loaded: Loaded, new: list[int], sampling: Sampling,
            max_new: int) -> tuple[str, int, str]:
    text = loaded.tokenizer.decode(new, skip_special_tokens=True)
    text, stopped = cut_at_stop(text, sampling.stop)
    eos = loaded.tokenizer.eos_token_id
    finish = "stop" if stopped or (new and new[-1] == eos) or len(new) < max_new else "length"
    return text, len(new), finish


def generate(loaded: Loaded, adapter: str | None, ids: list[int], sampling: Sampling,
             max_new: int) -> tuple[str, int, str]:
    """(text, completion tokens, finish_reason)."""
    kwargs = _generate_kwargs(loaded, ids, sampling, max_new)
    with loaded.lock:
        out = _run(loaded, adapter, sampling, kwargs)
    return _answer(loaded, out[0, len(ids):].tolist(), sampling, max_new)


def generate_batch(loaded: Loaded, adapter: str | None, items: list[tuple[list[int], int]],
                   sampling: Sampling, *, locked: bool = False) -> list[tuple[str, int, str]]:
    """Several prompts (ids, max_new) in one left-padded `generate` to the longest max_new;
    each row is cut at its own max_new and at its first end-of-sequence token, where its own
    `generate` would have stopped. Sampling must hold no seed and no stop strings."""
    import torch

    assert sampling.seed is None and not sampling.stop
    if len(items) == 1:
        ids, max_new = items[0]
        kwargs = _generate_kwargs(loaded, ids, sampling, max_new)
        with nullcontext() if locked else loaded.lock:
            out = _run(loaded, adapter, sampling, kwargs)
        return [_answer(loaded, out[0, len(ids):].tolist(), sampling, max_new)]
    width = max(len(ids) for ids, _ in items)
    pad = loaded.tokenizer.pad_token_id
    kwargs = _generate_kwargs(loaded, [pad] * width, sampling, max(m for _, m in items))
    where = kwargs["input_ids"].device
    kwargs["input_ids"] = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in items],
                                       device=where)
    kwargs["attention_mask"] = torch.tensor(
        [[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in items], device=where)
    with nullcontext() if locked else loaded.lock:
        out = _run(loaded, adapter, sampling, kwargs)
    ends = loaded.model.generation_config.eos_token_id
    ends = {loaded.tokenizer.eos_token_id, *(ends if isinstance(ends, list) else [ends])}
    answers = []
    for row, (_, max_new) in enumerate(items):
        new = out[row, width:width + max_new].tolist()
        first_end = next((i for i, t in enumerate(new) if t in ends), None)
        if first_end is not None:
            new = new[:first_end + 1]
        answers.append(_answer(loaded, new, sampling, max_new))
    return answers


def generate_stream(loaded: Loaded, adapter: str | None, ids: list[int], sampling: Sampling,
                    max_new: int) -> Iterator[tuple[str, str | None]]:
    """Yields (text piece, None) as tokens come, then ("", finish_reason). Text that could be
    the start of a stop string is held back until it is known not to be one."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True,
                                    skip_special_tokens=True, timeout=600)
    kwargs = {**_generate_kwargs(loaded, ids, sampling, max_new), "streamer": streamer}
    result: dict[str, Any] = {}
    loaded.lock.acquire()
    if adapter is not None and adapter not in loaded.adapters:
        loaded.lock.release()
        raise AdapterGone(adapter)

    def work() -> None:
        try:
            result["out"] = _run(loaded, adapter, sampling, kwargs)
        except BaseException as exc:  # surfaced to the reader below
            result["error"] = exc
            streamer.end()
        finally:
            loaded.lock.release()

    thread = threading.Thread(target=work, name="tunesmith-generate", daemon=True)
    thread.start()
    return _pieces(loaded, streamer, thread, result, ids, sampling, max_new)


def _pieces(loaded: Loaded, streamer: Any, thread: threading.Thread, result: dict[str, Any],
            ids: list[int], sampling: Sampling, max_new: int) -> Iterator[tuple[str, str | None]]:
    hold = max((len(s) for s in sampling.stop), default=1) - 1
    text, sent, stopped = "", 0, False
    for piece in streamer:
        text += piece
        cut, stopped = cut_at_stop(text, sampling.stop)
        ready = len(cut) if stopped else max(sent, len(text) - hold)
        if ready > sent:
            yield cut[sent:ready], None
            sent = ready
        if stopped:
            break
    if stopped:  # let generate finish (stop_strings ends it within a token or two)
        for _ in streamer:
            pass
    thread.join()
    if "error" in result:
        raise result["error"]
    if not stopped and len(text) > sent:
        yield text[sent:], None
    new = result["out"][0, len(ids):].tolist()
    eos = loaded.tokenizer.eos_token_id
    finish = "stop" if stopped or (new and new[-1] == eos) or len(new) < max_new else "length"
    yield "", finish
