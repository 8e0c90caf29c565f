"""The stored spec (`Job.spec`, the JSON the API accepted) is read only through
`tunesmith.spec.job.stored_spec`, which parses it into a `JobSpec`: a raw read skips the
spec's defaults and rules, and is how RLHF jobs once showed "auto" hyperparameters.

What counts as a raw read, in api/, tunesmith/ (but tunesmith/spec/), worker/, inference/:
- `<anything>.spec[...]` or `<anything>.spec.get(...)`: a dict read of a row's spec (a
  `JobSpec`, like `JobContext.spec`, has neither);
- `<anything>["spec"]`: the spec pulled out of a row or payload as a dict;
- `Job.spec` (the column on the model class): selecting the stored dict in a query.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("api", "tunesmith", "worker", "inference")
ALLOWED = ROOT / "tunesmith" / "spec"


def _is_spec_attribute(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "spec"


def _is_raw_read(node: ast.AST) -> bool:
    if isinstance(node, ast.Subscript):  # x.spec[...] or x["spec"]
        return _is_spec_attribute(node.value) or (
            isinstance(node.slice, ast.Constant) and node.slice.value == "spec")
    if isinstance(node, ast.Attribute) and node.attr == "get":  # x.spec.get(...)
        return _is_spec_attribute(node.value)
    # Job.spec: the column, selected in a query
    return (_is_spec_attribute(node) and isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "Job")


def raw_reads(tree: ast.AST) -> list[int]:
    return sorted(node.lineno for node in ast.walk(tree) if _is_raw_read(node))  # type: ignore[attr-defined]


def test_the_rule_catches_each_kind_of_raw_read() -> None:
    source = ('job.spec["tuning"]\nrow.spec.get("resources")\npayload["spec"]\n'
              'sa.select(Job.spec)\nstored_spec(job.spec).tuning\nctx.spec.method\n')
    assert raw_reads(ast.parse(source)) == [1, 2, 3, 4]


def test_no_raw_read_of_the_stored_spec_outside_the_spec_package() -> None:
    found = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_relative_to(ALLOWED):
                continue
            found += [f"{path.relative_to(ROOT)}:{line}"
                      for line in raw_reads(ast.parse(path.read_text(), str(path)))]
    assert not found, f"raw reads of the stored spec (use stored_spec): {found}"
