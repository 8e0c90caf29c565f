"""schemathesis against the live API: generated and mutated requests for every operation in
/openapi.json, with a valid key; no answer may be a 500 or disagree with the schema.

Real ids (a file, a queued job, the tiny model) are fed in half the time, so the fuzzing
reaches past "404 not found" into the handlers' own logic.
"""

import subprocess
import sys
from pathlib import Path

from testbed.learning import bundled_instructions
from testbed.servers import start_inference, wait_inference
from tests.faults.stack import FaultStack

# No worker: the jobs the fuzzer creates stay queued. No rate limit: it would answer most
# requests 429 and hide the handlers from the fuzzer (429 stays documented).
STACK_WORKERS: tuple[str, ...] = ()
STACK_ENV = {"TUNESMITH_RATE_LIMIT_PER_SECOND": "0"}
MAX_EXAMPLES = 10
SEED = 20261129

# Rejections the schema cannot express, all 400 as OpenAI answers them: a string with a NUL
# character, which PostgreSQL text cannot hold; a spec whose fields fit the schema but not
# each other. Per operation: none beyond these.
ALWAYS_EXPECTED = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
# Per operation: none beyond these.
EXPECTED: dict[str, list[str]] = {}


def _config(file_id: str, job_id: str) -> str:
    lines = [
        f'[dictionaries.files]\nvalues = ["{file_id}"]',
        f'[dictionaries.jobs]\nvalues = ["{job_id}"]',
        '[dictionaries.models]\nvalues = ["tiny-llama"]',
        "[parameters]",
        '"path.file_id" = { dictionary = "files", probability = 0.5 }',
        '"path.job_id" = { dictionary = "jobs", probability = 0.5 }',
        '"body.training_file" = { dictionary = "files", probability = 0.7 }',
        '"body.model" = { dictionary = "models", probability = 0.7 }',
    ]
    lines.append(f"[checks.positive_data_acceptance]\nexpected-statuses = "
                 f"{_toml_list(ALWAYS_EXPECTED)}")
    for name, extra in EXPECTED.items():
        lines.append(f'[[operations]]\ninclude-name = "{name}"\n'
                     "checks.positive_data_acceptance.expected-statuses = "
                     f"{_toml_list(ALWAYS_EXPECTED + extra)}")
    return "\n".join(lines) + "\n"


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def test_fuzzed_requests_get_no_500_and_match_the_schema(fault_stack: FaultStack,
                                                         tmp_path: Path) -> None:
    project = fault_stack.project("fuzz")
    file_id = project.upload(bundled_instructions())["id"]
    job_id = project.create_job({"model": "tiny-llama", "training_file": file_id})["id"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(file_id, job_id))
    # One worker: Python 3.11.7's ast.parse is not thread-safe (gh-106905), and hypothesis
    # parses lambdas to describe strategies; two workers crashed the run ("AST constructor
    # recursion depth mismatch").
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config),
        "--no-color", "run", f"{fault_stack.url}/openapi.json",
        "--header", f"Authorization: Bearer {project.key}",
        "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--workers", "1", "--request-timeout", "30", "--no-shrink",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
    ]
    # Readiness takes no input, and on this stack (no worker) it rightly answers 503: it is
    # left out. Chat and completions are fuzzed against an inference process of the stack's
    # (a generation on a loaded CPU can take seconds: hence the 30 s request timeout).
    command += ["--exclude-path", "/readyz"]
    inference = start_inference(fault_stack.env, tmp_path / "inference.log")
    try:
        wait_inference(inference, fault_stack.env)
        result = subprocess.run(command, capture_output=True, text=True, timeout=420)
    finally:
        inference.stop()
    summary = result.stdout[-8000:]
    print(f"\n{summary[-1500:]}")
    assert result.returncode == 0, summary
    assert "unhandled error" not in fault_stack.api_log(), fault_stack.api_log()[-5000:]
