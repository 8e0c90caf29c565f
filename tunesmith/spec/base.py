"""The base of every spec model: what a job body may hold, whatever parsed it.

- `extra="forbid"`: a field we do not know is refused, never dropped.
- `strict=True`: no coercion. `"seed": true` is not 1, `"n_epochs": "3"` is not 3; a JSON
  integer still fills a float field.
- `allow_inf_nan=False`: `Infinity` or `NaN` (which Python's json module reads) pass `gt=0`
  and would be stored as tokens strict JSON cannot read back; every float is finite.
- every string valid Unicode: a lone surrogate ("\\ud800", which JSON escapes can write) was
  stored, then broke every listing of its project.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

# Upper bounds shared by several fields, so a typo (an extra digit or ten) is refused at
# creation instead of planning a run that never ends.
MAX_STEPS = 10_000_000
MAX_COEFFICIENT = 1_000.0  # KL/value/clip coefficients, DPO beta, temperatures
ID_LENGTH = 64  # file and job ids are ~30 characters
NAME_LENGTH = 255  # model names, as the models root and the hub allow


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        # Strings, and the strings of a list or dict field (metadata, target_modules);
        # nested models run this on their own fields.
        texts = [value] if isinstance(value, str) else \
            [*value.keys(), *value.values()] if isinstance(value, dict) else \
            value if isinstance(value, list) else []
        for text in texts:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError("not valid Unicode (a lone surrogate at character "
                                     f"{exc.start})") from None
        return value


class TypedSpec(SpecModel):
    """A variant of a union the `type` field tells apart (an objective, a tuning)."""

    @classmethod
    def type_name(cls) -> str:
        default = cls.model_fields["type"].default
        assert isinstance(default, str)
        return default
