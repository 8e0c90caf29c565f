"""`GET /v1/methods` lists every objective and tuning, and its schemas accept the README's
examples (and refuse what the spec refuses)."""

import json
import re
from pathlib import Path

import jsonschema
import pytest

from tunesmith.spec.job import JobSpec
from tunesmith.spec.objectives import METHOD_CLASSES
from tunesmith.spec.tunings import TUNING_CLASSES

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_examples() -> list[dict]:
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(), flags=re.S)
    examples = [json.loads(block) for block in blocks]
    return [e for e in examples if "model" in e]


@pytest.fixture(scope="module")
def methods(project) -> dict:  # type: ignore[no-untyped-def]
    response = project.http.get("/v1/methods")
    assert response.status_code == 200
    return response.json()


def test_every_objective_and_tuning_is_listed(methods) -> None:  # type: ignore[no-untyped-def]
    listed = {o["type"] for o in methods["objectives"]}
    assert listed == {cls.model_fields["type"].default for cls in METHOD_CLASSES}
    tunings = {t["type"] for t in methods["tunings"]}
    assert tunings == {cls.model_fields["type"].default for cls in TUNING_CLASSES}
    for objective in methods["objectives"]:
        assert objective["description"] and objective["data_formats"] and objective["tunings"]
        assert objective["schema"]["properties"]["type"]


def test_readme_examples_cover_every_objective_and_validate(methods) -> None:  # type: ignore[no-untyped-def]
    examples = readme_examples()
    assert {e["method"]["type"] for e in examples} == {o["type"] for o in methods["objectives"]}
    objectives = {o["type"]: o for o in methods["objectives"]}
    tunings = {t["type"]: t for t in methods["tunings"]}
    for example in examples:
        objective = objectives[example["method"]["type"]]
        jsonschema.validate(example["method"], objective["schema"])
        tuning = example.get("tuning", {"type": "lora"})
        jsonschema.validate(tuning, tunings[tuning["type"]]["schema"])
        assert tuning["type"] in objective["tunings"]
        JobSpec.model_validate(example)  # the server's own validation agrees


def test_schemas_refuse_what_the_server_refuses(methods) -> None:  # type: ignore[no-untyped-def]
    tunings = {t["type"]: t for t in methods["tunings"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "lora", "r": 0}, tunings["lora"]["schema"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "lora", "rank": 8}, tunings["lora"]["schema"])
    supervised = next(o for o in methods["objectives"] if o["type"] == "supervised")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "supervised", "supervised": {"hyperparameters": {
            "learning_rate": -1}}}, supervised["schema"])


def test_defaults_are_reported(methods) -> None:  # type: ignore[no-untyped-def]
    lora = next(t for t in methods["tunings"] if t["type"] == "lora")
    assert lora["defaults"]["r"] == 8 and lora["defaults"]["target_modules"] == "all-linear"
    supervised = next(o for o in methods["objectives"] if o["type"] == "supervised")
    assert supervised["defaults"]["hyperparameters"]["n_epochs"] == "auto"
