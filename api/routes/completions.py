"""`POST /v1/chat/completions` and `POST /v1/completions`, in OpenAI's shapes.

The API checks the key, the request and the model's owner, resolves the model to its
folders, and forwards to the inference process (`tunesmith inference`, or a vLLM server):
answers and server-sent-event streams pass through as they come.
"""

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentProject, SessionDep
from api.errors import InvalidRequest, NotFound, error_responses
from api.inference_forward import forward
from api.schemas.completions import ChatCompletion, Completion
from api.schemas.media import event_stream
from tunesmith.model_names import BadModelName, ModelNotFound
from tunesmith.served_models import resolve_served
from tunesmith.settings import settings

router = APIRouter(prefix="/v1", tags=["inference"])


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(description="Text, or a list of text parts.")
    name: str | None = None

    def as_template_input(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else \
            "".join(part.text for part in self.content)
        # Chat templates know "system"; OpenAI's newer "developer" role means the same.
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class Sampling(BaseModel):
    """What both routes share. Fields OpenAI has and we cannot honour are refused (400,
    naming the field) rather than ignored."""

    model_config = ConfigDict(extra="forbid")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: Literal[1] = Field(default=1, description="One choice per request only.")
    # Accepted at OpenAI's default only: no penalty is applied, so any other value is refused.
    presence_penalty: float = Field(default=0, ge=0, le=0)
    frequency_penalty: float = Field(default=0, ge=0, le=0)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop holds up to 4 non-empty strings")
        return stops

    def limit(self) -> int | None:
        asked = self.max_completion_tokens or self.max_tokens
        if asked is not None and asked > settings.inference_max_tokens:
            field = "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
            raise InvalidRequest(f"{field} is {asked}; this server generates at most "
                                 f"{settings.inference_max_tokens} tokens a request "
                                 "(TUNESMITH_INFERENCE_MAX_TOKENS).", param=field)
        return asked


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(Sampling):
    prompt: str


def _forward_body(request: Sampling, session: SessionDep, project: CurrentProject,
                  extra: dict[str, Any]) -> dict[str, Any]:
    try:
        served = resolve_served(session, request.model, project_id=project.id)
    except ModelNotFound as exc:
        raise NotFound(str(exc), param="model", code="model_not_found") from exc
    except BadModelName as exc:
        raise InvalidRequest(str(exc), param="model") from exc
    session.close()  # generation may take long: hold no database connection meanwhile
    return {"model": request.model, "max_tokens": request.limit(),
            "temperature": request.temperature, "top_p": request.top_p,
            "stop": request.stop, "seed": request.seed, "stream": request.stream,
            "tunesmith_model": served.as_ref(), **extra}


# The inference process's answer passes through as it came (a Response: FastAPI does not
# re-validate it); the model documents it.
@router.post("/chat/completions", response_model=ChatCompletion, responses={
    **event_stream("A chat completion, or with `stream: true` its chunks as server-sent "
                   "events", data="A chat.completion.chunk as JSON, or [DONE] after the last"),
    **error_responses(404, 503)})
async def create_chat_completion(request: ChatRequest, session: SessionDep,
                                 project: CurrentProject) -> Any:
    """A chat answer from any model of the project, with its own chat template."""
    body = await run_in_threadpool(
        _forward_body, request, session, project,
        {"messages": [m.as_template_input() for m in request.messages]})
    return await forward("/v1/chat/completions", body)


@router.post("/completions", response_model=Completion, responses={
    **event_stream("A completion, or with `stream: true` its chunks as server-sent events",
                   data="A text_completion chunk as JSON, or [DONE] after the last"),
    **error_responses(404, 503)})
async def create_completion(request: CompletionRequest, session: SessionDep,
                            project: CurrentProject) -> Any:
    """The continuation of a plain-text prompt."""
    body = await run_in_threadpool(_forward_body, request, session, project,
                                   {"prompt": request.prompt})
    return await forward("/v1/completions", body)
