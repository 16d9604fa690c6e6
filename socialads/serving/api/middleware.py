"""The edge of every HTTP request: the body-size limit (413) and the request metrics."""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING

from socialads.serving.api.errors import payload_too_large

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from socialads.serving.metrics import ServingMetrics

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class EdgeMiddleware:
    """Body-size limit (413) and request metrics for every HTTP request.

    A plain ASGI middleware: ``BaseHTTPMiddleware`` costs a task and memory streams per
    request. With a Content-Length the limit is checked from the header alone (the HTTP
    server enforces the length); a chunked body is read up to the limit first, then replayed.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._too_large = payload_too_large(max_body_bytes).response()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500  # if the app raises before answering

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            length, chunked = _declared_body(scope["headers"])
            if length is not None:
                if length > self.max_body_bytes:
                    await self._too_large(scope, receive, send_recording)
                    return
            elif chunked:
                replay = await self._read_capped(receive)
                if replay is None:
                    await self._too_large(scope, receive, send_recording)
                    return
                receive = replay
            await self.app(scope, receive, send_recording)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            if method not in _METHODS:  # bounded label values, whatever clients send
                method = "other"
            self.metrics.observe_request(route, method, status, perf_counter() - start)

    async def _read_capped(self, receive: Receive) -> Receive | None:
        """Read a body without Content-Length; None when it exceeds the limit."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                break
        messages.reverse()

        async def replay() -> Message:
            return messages.pop() if messages else await receive()

        return replay


def _declared_body(headers: Sequence[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of a request, from its raw headers."""
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value), False
            except ValueError:
                return None, True  # let the capped reader decide
        if name == b"transfer-encoding":
            chunked = True
    return None, chunked
