"""Forwarding a checked chat or completion request to the inference server, over HTTP.

Our own process (`tunesmith inference`) reads the resolved model from `tunesmith_model`. A
vLLM OpenAI server (TUNESMITH_INFERENCE_BACKEND=vllm) is given LoRA and QLoRA adapters with
its `/v1/load_lora_adapter` route (it must run with `--enable-lora` and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, and see the same files); the model name it serves
is the adapter's, so the body passes through as OpenAI's. Its one base model must be served
under the base's name here (`--served-model-name tiny-llama`), and be the base the adapters
were trained on. Not tested here: no vLLM runs on these machines; the request shapes were
read against vLLM's source (LoadLoRAAdapterRequest: lora_name, lora_path; 200 with text on
success, 400 "has already been loaded" for a name it holds).
"""

from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.errors import APIError, InvalidRequest
from tunesmith import storage
from tunesmith.settings import settings


class InferenceUnavailable(APIError):
    status_code = 503
    type = "server_error"
    code = "inference_unavailable"


_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        # A generation may take long; connecting must not.
        _client = httpx.AsyncClient(base_url=settings.inference_base_url, timeout=httpx.Timeout(
            connect=5.0, read=settings.inference_wait_seconds + 900.0, write=30.0, pool=30.0))
    return _client


async def _vllm_body(body: dict[str, Any]) -> dict[str, Any]:
    ref = body.pop("tunesmith_model")
    if ref["tuning"] is None:
        return body
    if ref["tuning"] not in ("lora", "qlora"):
        raise InvalidRequest(
            f"model: '{body['model']}' was trained with tuning '{ref['tuning']}', which the "
            "vLLM server this service uses cannot load; ask the operator for the tunesmith "
            "inference process.", param="model")
    # vLLM reads the adapter from its disk, which must be this node's: fetched to scratch
    # first where the store is S3.
    folder = await run_in_threadpool(
        storage.fetch_job_path, ref["weights_job"],
        storage.job_dir(ref["weights_job"]) / ref["weights_path"])
    # Asked every time: vLLM answers 400 "has already been loaded" at once for a loaded one,
    # and a vLLM that restarted (and forgot its adapters) gets it back.
    answer = await _http().post("/v1/load_lora_adapter", json={
        "lora_name": body["model"], "lora_path": str(folder)})
    if answer.status_code != 200 and "already been loaded" not in answer.text:
        raise InferenceUnavailable(f"vLLM refused adapter '{body['model']}': "
                                   f"{answer.text[:300]}", headers={"Retry-After": "5"})
    return body


def _unavailable(exc: httpx.HTTPError) -> InferenceUnavailable:
    return InferenceUnavailable(
        f"The inference server at {settings.inference_base_url} did not answer "
        f"({type(exc).__name__}); `tunesmith serve` starts one, or run `tunesmith inference`.",
        headers={"Retry-After": "5"})


def _passed_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}


async def forward(path: str, body: dict[str, Any]) -> Response:
    if settings.inference_backend == "vllm":
        body = await _vllm_body(body)
    client = _http()
    try:
        if not body.get("stream"):
            answer = await client.post(path, json=body)
            return JSONResponse(answer.json(), status_code=answer.status_code,
                                headers=_passed_headers(answer))
        request = client.build_request("POST", path, json=body)
        upstream = await client.send(request, stream=True)
    except (httpx.HTTPError, ValueError) as exc:
        raise _unavailable(exc) if isinstance(exc, httpx.HTTPError) else InferenceUnavailable(
            "The inference server answered something that is not JSON.") from exc
    if upstream.status_code != 200:
        content = await upstream.aread()
        await upstream.aclose()
        return Response(content, status_code=upstream.status_code,
                        media_type="application/json", headers=_passed_headers(upstream))
    return StreamingResponse(_relay(upstream), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()
