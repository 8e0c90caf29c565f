"""Fixed training data for the benchmarks, built from the bundled corpus (no randomness)."""

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any


def corpus_sentences() -> list[str]:
    text = (resources.files("tunesmith") / "data" / "tiny_corpus.txt").read_text()
    flat = " ".join(text.split())
    return [s.strip() for s in re.split(r"(?<=[.?;])\s+", flat) if len(s.strip()) > 10]


def long_chat_rows(count: int, *, answer_sentences: int = 8) -> list[dict[str, Any]]:
    """Chat rows whose answers run to ~150 tokens of the tiny tokenizer (under its 256 limit),
    so a training step is mostly matrix work rather than Python around it."""
    sentences = corpus_sentences()
    n = len(sentences)
    rows = []
    for i in range(count):
        answer = " ".join(sentences[(i + 1 + j) % n] for j in range(answer_sentences))
        rows.append({"messages": [
            {"role": "user", "content": f"Continue after: {sentences[i % n]}"},
            {"role": "assistant", "content": answer}]})
    return rows


def short_chat_rows() -> list[dict[str, Any]]:
    """The 16 bundled instruction rows the tests train on."""
    text = (resources.files("tunesmith") / "data" / "instructions.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
