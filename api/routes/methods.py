"""`GET /v1/methods`: every objective and tuning the server accepts, from the spec itself."""

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import CurrentProject
from api.schemas.methods import Methods
from tunesmith.spec.objectives import METHOD_CLASSES, QUANTIZABLE_OBJECTIVES
from tunesmith.spec.quantization import (
    QUANTIZABLE_TUNINGS,
    QUANTIZATION_CLASSES,
    refusal,
)
from tunesmith.spec.tunings import TUNING_CLASSES

router = APIRouter(prefix="/v1", tags=["methods"])


def _type_of(cls: type[BaseModel]) -> str:
    return str(cls.model_fields["type"].default)


def _doc(cls: type[BaseModel]) -> str:
    return (cls.__doc__ or "").strip().split("\n\n")[0]


def describe_methods() -> dict[str, Any]:
    objectives = []
    for cls in METHOD_CLASSES:
        kind = _type_of(cls)
        config_field = cls.model_fields[kind]
        defaults = (config_field.default_factory().model_dump(mode="json")  # type: ignore[call-arg]
                    if config_field.default_factory else None)
        objectives.append({
            "type": kind, "description": _doc(cls), "schema": cls.model_json_schema(),
            "defaults": defaults,
            "data_formats": sorted(f.value for f in cls.training_formats),
            "tunings": sorted(cls.tunings()),
        })
    tunings = [{"type": _type_of(cls), "description": _doc(cls),
                "schema": cls.model_json_schema(), "defaults": cls().model_dump(mode="json")}
               for cls in TUNING_CLASSES if _can_default(cls)]
    quantizations = []
    for quantization in QUANTIZATION_CLASSES:
        for method in quantization.model_fields["method"].annotation.__args__:  # type: ignore[union-attr]
            quantizations.append({
                "method": method, "description": _doc(quantization),
                "schema": quantization.model_json_schema(),
                "tunings": sorted(t for t in QUANTIZABLE_TUNINGS
                                  if refusal(method, t, "supervised") is None),
                "objectives": sorted(QUANTIZABLE_OBJECTIVES)})
    return {"object": "list", "objectives": objectives, "tunings": tunings,
            "quantizations": quantizations}


def _can_default(cls: type[BaseModel]) -> bool:
    return all(not f.is_required() for f in cls.model_fields.values())


@router.get("/methods", response_model=Methods)
def read_methods(_: CurrentProject) -> dict[str, Any]:
    """Objectives (`method.type`) and tunings (`tuning.type`) with JSON schemas and defaults."""
    return describe_methods()
