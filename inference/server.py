"""`tunesmith inference`: the torch side of chat and completions, a small HTTP server.

It speaks OpenAI's `/v1/chat/completions` and `/v1/completions` shapes to the API, which
has already checked the key, the model's owner and the request's fields, and sends the
resolved model (`tunesmith_model`: base folder, tuning, weights folder) with the body. It
binds to localhost by default: nothing here checks keys.
"""

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from inference.batching import Batcher
from inference.generation import (
    AdapterGone,
    PromptTooLong,
    Sampling,
    generate_stream,
    new_tokens,
    prompt_ids,
)
from inference.loaded_models import ModelCache, ModelRef
from inference.slots import Busy, Slots
from tunesmith.settings import settings


def _error(status: int, message: str, *, param: str | None = None, code: str = "invalid_request",
           headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 and status != 429 else "server_error"
    return JSONResponse({"error": {"type": kind, "code": code, "message": message,
                                   "param": param}}, status_code=status, headers=headers)


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _gpu_bytes() -> dict[str, int]:
    """What torch's allocator holds on the GPU: the loaded weights plus generation's
    activations and caches (the budget counts the weights alone)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"cuda_allocated_bytes": torch.cuda.memory_allocated(),
            "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated()}


def create_app() -> FastAPI:
    app = FastAPI(title="Tunesmith inference")
    cache = ModelCache(int(settings.inference_memory_budget_mib * 1024 * 1024))
    slots = Slots(settings.inference_max_concurrent, settings.inference_max_waiting,
                  settings.inference_wait_seconds)
    batcher = Batcher(settings.inference_batch_window_ms / 1000, settings.inference_max_batch)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        """What is loaded, against the budget, and this process's resident memory."""
        return {**cache.describe(), "rss_bytes": _rss_bytes(), **_gpu_bytes(), **slots.describe(),
                **batcher.describe()}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await _complete(await request.json(), chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _complete(await request.json(), chat=False)

    async def _complete(body: dict[str, Any], *, chat: bool) -> Any:
        ref = ModelRef(**body["tunesmith_model"])
        sampling = Sampling(max_tokens=body.get("max_tokens"),
                            temperature=float(body.get("temperature", 1.0)),
                            top_p=float(body.get("top_p", 1.0)), stop=body.get("stop") or [],
                            seed=body.get("seed"))
        try:
            await slots.enter()
        except Busy as busy:
            return _error(busy.status, str(busy), code="overloaded",
                          headers={"Retry-After": str(busy.retry_after)})
        try:
            started = await run_in_threadpool(_start, body, ref, sampling, chat)
        except PromptTooLong as exc:
            slots.leave()
            return _error(400, str(exc), param=exc.param, code="context_length_exceeded")
        except FileNotFoundError as exc:  # deleted from the store after the API resolved it
            slots.leave()
            return _error(404, str(exc), param="model", code="model_not_found")
        except BaseException:
            slots.leave()
            raise
        if body.get("stream"):
            return StreamingResponse(_sse(started, body["model"], chat, slots),
                                     media_type="text/event-stream")
        try:
            return _response(started, body["model"], chat)
        finally:
            slots.leave()

    def _start(body: dict[str, Any], ref: ModelRef, sampling: Sampling,
               chat: bool) -> dict[str, Any]:
        """Load, check limits and generate (or start streaming), retrying once an adapter
        that was evicted in between."""
        for _ in range(3):
            loaded, adapter = cache.acquire(ref)
            ids = prompt_ids(loaded, messages=body.get("messages") if chat else None,
                             prompt=None if chat else body.get("prompt"))
            max_new = new_tokens(loaded, ids, sampling, settings.inference_max_tokens,
                                 "messages" if chat else "prompt")
            try:
                if body.get("stream"):
                    return {"pieces": generate_stream(loaded, adapter, ids, sampling, max_new)}
                text, count, finish = batcher.generate(loaded, adapter, ids, sampling, max_new)
                return {"text": text, "finish": finish, "usage": {
                    "prompt_tokens": len(ids), "completion_tokens": count,
                    "total_tokens": len(ids) + count}}
            except AdapterGone:
                continue
        raise RuntimeError(f"model {ref.model_id} was evicted three times in a row: raise "
                           "TUNESMITH_INFERENCE_MEMORY_BUDGET_MIB")

    return app


def _response(started: dict[str, Any], model: str, chat: bool) -> dict[str, Any]:
    created = int(time.time())
    if chat:
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": created, "model": model, "choices": [{
                    "index": 0, "message": {"role": "assistant", "content": started["text"]},
                    "logprobs": None, "finish_reason": started["finish"]}],
                "usage": started["usage"]}
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": created,
            "model": model, "choices": [{"index": 0, "text": started["text"], "logprobs": None,
                                         "finish_reason": started["finish"]}],
            "usage": started["usage"]}


def _chunk(ident: str, created: int, model: str, chat: bool, text: str | None,
           finish: str | None, first: bool = False) -> str:
    if chat:
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        body = {"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish}]}
    else:
        body = {"id": ident, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text or "", "logprobs": None,
                             "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


async def _sse(started: dict[str, Any], model: str, chat: bool,
               slots: "Slots") -> AsyncIterator[str]:
    pieces: Iterator[tuple[str, str | None]] = started["pieces"]
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    try:
        if chat:
            yield _chunk(ident, created, model, chat, "", None, first=True)
        async for text, finish in iterate_in_threadpool(pieces):
            if finish is None:
                yield _chunk(ident, created, model, chat, text, None)
            else:
                yield _chunk(ident, created, model, chat, None if chat else "", finish)
        yield "data: [DONE]\n\n"
    finally:
        slots.leave()


def main(host: str, port: int) -> None:
    import uvicorn

    asyncio.run(uvicorn.Server(uvicorn.Config(create_app(), host=host, port=port,
                                              log_level="info")).serve())

