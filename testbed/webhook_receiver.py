"""A webhook receiver on 127.0.0.1, as a user would run one: it records every request and
answers 500 to each event's first `fail_first` deliveries (or to all while `down`)."""

import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    def __init__(self, *, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.down = False
        self.requests: list[Received] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    event_id = headers.get("webhook-id", "")
                    receiver._seen[event_id] += 1
                    failing = receiver.down or receiver._seen[event_id] <= receiver.fail_first
                    status = 500 if failing else 200
                    receiver.requests.append(Received(headers, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of(self, event_type: str, secret: str) -> list[Received]:
        """Every request that carried a validly signed event of `event_type`."""
        found = []
        for request in list(self.requests):
            try:
                payload = Webhook(secret).verify(request.body, request.headers)
            except WebhookVerificationError:
                continue
            if payload["type"] == event_type:
                found.append(request)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
