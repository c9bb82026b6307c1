"""A webhook receiver for tests: a small HTTP server on 127.0.0.1.

It records every request it gets (headers, body, the status it answered)
and answers as the test says: ``answers`` are the statuses of the first
requests (then 200), and while ``hold()`` is in force requests wait, unanswered,
until ``release()`` (a sender is then stuck in the middle of a delivery).
It checks nothing itself; tests verify signatures with ``standardwebhooks``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOLD_MAX_S = 60.0
"""A held request is answered after this long at the latest."""


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    """Its headers, names in lower case."""
    body: bytes
    status: int
    """The status it was answered with."""
    at: float
    """When it arrived (unix time)."""

    @property
    def event_id(self) -> str:
        """Its ``webhook-id`` header."""
        return self.headers.get("webhook-id", "")

    @property
    def payload(self) -> Any:
        """Its body as JSON."""
        return json.loads(self.body)


class WebhookReceiver:
    """Records webhook deliveries on ``url`` until :meth:`close`."""

    def __init__(self, answers: Iterable[int] = ()) -> None:
        self.answers = list(answers)
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._released.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._answer(headers, body)
                receiver._released.wait(HOLD_MAX_S)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone (killed while it waited)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so that close() returns at once
            name="webhook-receiver",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Where to send webhooks."""
        return f"http://127.0.0.1:{self._server.server_port}/hooks"

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            status = self.answers.pop(0) if self.answers else 200
            self._received.append(Received(headers, body, status, time.time()))
            return status

    def hold(self) -> None:
        """From now on, requests wait unanswered until :meth:`release`."""
        self._released.clear()

    def release(self) -> None:
        """Answer the held requests and the ones to come at once."""
        self._released.set()

    def received(self, event_id: str | None = None) -> list[Received]:
        """The requests so far (of ``event_id`` only, if given), in arrival order."""
        with self._lock:
            return [r for r in self._received if event_id is None or r.event_id == event_id]

    def ids(self) -> set[str]:
        """The event ids received so far."""
        return {r.event_id for r in self.received()}

    def close(self) -> None:
        """Answer what is held and stop the server."""
        self.release()
        self._server.shutdown()
        self._server.server_close()
