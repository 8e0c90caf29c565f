"""`GET /v1/files/{id}/preview`: the first rows with their line numbers, characters, and token
counts from the named model's tokenizer; a bad model or limit is a 400 naming the field."""

from tokenizers import Tokenizer

from testbed.jobs import Project
from tests.conftest import Stack


def test_preview_counts_each_rows_tokens_with_the_models_tokenizer(stack: Stack,
                                                                   project: Project) -> None:
    rows = [{"messages": [{"role": "user", "content": f"Question number {i}?"},
                          {"role": "assistant", "content": "An answer " * i}]} for i in range(1, 8)]
    file = project.upload(rows, "preview.jsonl")
    page = project.http.get(f"/v1/files/{file['id']}/preview",
                            params={"model": "tiny-llama", "limit": 5}).json()
    assert page["rows"] == 7 and [r["line"] for r in page["data"]] == [1, 2, 3, 4, 5]
    tokenizer = Tokenizer.from_file(str(stack.tiny_model / "tokenizer.json"))
    for shown, row in zip(page["data"], rows, strict=False):
        text = "\n".join(m["content"] for m in row["messages"])
        assert shown["row"] == row
        assert shown["characters"] == len(text)
        assert shown["tokens"] == len(tokenizer.encode(text, add_special_tokens=False).ids)
    counts = [r["tokens"] for r in page["data"]]
    assert counts == sorted(counts) and counts[0] < counts[-1]  # longer answers, more tokens

    plain = project.http.get(f"/v1/files/{file['id']}/preview").json()
    assert [r["tokens"] for r in plain["data"]] == [None] * 7  # no model: characters only


def test_bad_model_or_limit_is_refused_with_the_field(project: Project) -> None:
    file = project.upload([{"prompt": "a", "completion": "b"}], "preview-bad.jsonl")
    for params, field in (({"model": "no-such-model"}, "model"), ({"model": "../etc"}, "model"),
                          ({"limit": 0}, "limit"), ({"limit": 101}, "limit")):
        response = project.http.get(f"/v1/files/{file['id']}/preview", params=params)
        assert response.status_code == 400, (params, response.text)
        assert field in (response.json()["error"]["param"] or ""), response.text
    assert project.http.get("/v1/files/file-nope/preview").status_code == 404
