"""`GET /v1/methods`: every objective, tuning and quantisation the server accepts."""

from typing import Any, Literal

from pydantic import BaseModel, Field


class ObjectiveInfo(BaseModel):
    type: str = Field(description="A `method.type`.")
    description: str
    # The JSON schema of the spec's method object of this type.
    schema_: dict[str, Any] = Field(alias="schema")
    defaults: dict[str, Any] | None
    data_formats: list[str]
    tunings: list[str]


class TuningInfo(BaseModel):
    type: str = Field(description="A `tuning.type`.")
    description: str
    schema_: dict[str, Any] = Field(alias="schema")
    defaults: dict[str, Any]


class QuantizationInfo(BaseModel):
    method: str = Field(description="A `quantization.method`.")
    description: str
    schema_: dict[str, Any] = Field(alias="schema")
    tunings: list[str]
    objectives: list[str]


class Methods(BaseModel):
    object: Literal["list"]
    objectives: list[ObjectiveInfo]
    tunings: list[TuningInfo]
    quantizations: list[QuantizationInfo]
