"""One API session: base URL and key, JSON calls, error bodies turned into one message."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class APIError(Exception):
    """The service said no (4xx/5xx) or could not be reached: one line a person can act on."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        param = f" ({error['param']})" if error.get("param") else ""
        return f"{response.status_code} {error.get('code') or error.get('type')}{param}: " \
               f"{error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:500]}"


class Client:
    """`TUNESMITH_URL` and `TUNESMITH_API_KEY` unless given."""

    def __init__(self, url: str | None = None, api_key: str | None = None,
                 timeout: float = 60) -> None:
        self.url = (url or os.environ.get("TUNESMITH_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("TUNESMITH_API_KEY")
        if not key:
            raise APIError("no API key: set TUNESMITH_API_KEY or pass --api-key "
                           "(`tunesmith keys create` on the server prints one)")
        self.http = httpx.Client(base_url=self.url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {key}"})

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise APIError(_error_message(response), response.status_code)
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._checked(self.http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise APIError(f"cannot reach {self.url}: {exc}") from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs).json()

    @contextmanager
    def stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        try:
            with self.http.stream("GET", path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    self._checked(response)
                yield response
        except httpx.TransportError as exc:
            raise APIError(f"cannot reach {self.url}: {exc}") from exc

    def list_all(self, path: str, params: dict[str, Any] | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
        """Follow OpenAI's `after` cursor until `has_more` is false or `limit` items."""
        items: list[dict[str, Any]] = []
        query = dict(params or {})
        while True:
            page = self.get(path, params=query)
            items.extend(page["data"])
            if not page.get("has_more") or not page["data"] or (limit and len(items) >= limit):
                return items[:limit] if limit else items
            query["after"] = page["data"][-1]["id"]
