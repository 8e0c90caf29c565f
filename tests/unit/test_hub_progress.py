"""Hub download progress reaches the job's events, throttled: a bar that updates many times
a second reports once per interval and once when it completes."""

from typing import Any

from worker.training.hub_download import progress_bar_class


def test_progress_is_reported_throttled_and_at_completion() -> None:
    reported: list[tuple[str, dict[str, Any]]] = []
    bar_class = progress_bar_class(lambda message, data: reported.append((message, data)),
                                   "org/model")
    bar = bar_class(total=1000, unit="B", desc="Downloading bytes")
    for _ in range(100):
        bar.update(10)
    bar.close()
    assert 1 <= len(reported) <= 2, reported  # the first update, then the completion
    message, data = reported[-1]
    assert "org/model" in message and "1000 of 1000 bytes" in message
    assert data == {"model": "org/model", "unit": "bytes", "done": 1000, "total": 1000}
