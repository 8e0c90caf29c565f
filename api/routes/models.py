"""`/v1/models`: the base models a project can use and its fine-tuned models, OpenAI-shaped."""

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentProject, SessionDep
from api.errors import InvalidRequest, NotFound, error_responses
from api.schemas.models import ModelDeleted, ModelList, ModelObject
from api.serializers import list_object
from tunesmith.model_names import BadModelName, ModelNotFound
from tunesmith.served_models import NO_SUCH_MODEL, delete_model, project_models

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList, response_model_exclude_unset=True)
def read_models(session: SessionDep, project: CurrentProject) -> dict[str, Any]:
    """Base models, then the project's fine-tuned models and checkpoints."""
    return list_object(project_models(session, project.id), has_more=False)


@router.get("/models/{model:path}", response_model=ModelObject, response_model_exclude_unset=True,
            responses=error_responses(404))
def read_model(session: SessionDep, project: CurrentProject, model: str) -> dict[str, Any]:
    """One model, by id."""
    for item in project_models(session, project.id):
        if item["id"] == model:
            return item
    raise NotFound(NO_SUCH_MODEL, param="model", code="model_not_found")


@router.delete("/models/{model:path}", response_model=ModelDeleted,
               responses=error_responses(400, 404))
def delete_model_route(session: SessionDep, project: CurrentProject,
                       model: str) -> dict[str, Any]:
    """Delete a fine-tuned model's weights; its job and events stay."""
    try:
        delete_model(session, model, project_id=project.id)
    except ModelNotFound as exc:
        raise NotFound(str(exc), param="model", code="model_not_found") from exc
    except BadModelName as exc:
        raise InvalidRequest(str(exc), param="model") from exc
    return {"id": model, "object": "model", "deleted": True}
