"""A TCP relay in front of a real server that can make it vanish in the middle of a run.

The relay forwards bytes both ways untouched, so an S3 client signing requests for the
relay's address (SigV4 signs the Host header) is served by the real server behind it.
Armed with a byte pattern (say ``b"PUT /bucket/raw/"``, or a compiled bytes regex), the
moment a client sends it the relay drops that request, resets every open connection and
stops listening: from then on the server is unreachable (connection refused), as if it had
crashed at that exact point. ``restore()`` brings it back on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading

REGEX_WINDOW = 1024


class FaultProxy:
    """A loopback relay to ``127.0.0.1:upstream_port`` that can be cut on cue."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = _free_port()
        self.tripped = threading.Event()
        """Set when the relay was cut (by its pattern or by :meth:`cut`)."""
        self._pattern: bytes | re.Pattern[bytes] | None = None
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        """The relay's address, to use instead of the real server's."""
        return f"http://127.0.0.1:{self.port}"

    # -- control (from any thread) ---------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Start relaying."""
        self._thread.start()
        self._call(self._listen())
        return self

    def cut_on(self, pattern: bytes | re.Pattern[bytes]) -> None:
        """Cut the moment a client sends ``pattern`` (that request is not relayed); a regex
        matches within one request line (up to ``REGEX_WINDOW`` bytes)."""
        self._pattern = pattern

    def cut(self) -> None:
        """Cut now."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listen again on the same port, disarmed."""
        self._pattern = None
        self._call(self._listen())
        self.tripped.clear()

    def close(self) -> None:
        """Cut and stop the relay's thread."""
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    # -- the relay (on its own event loop) -------------------------------------------------------
    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._relay, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        self.tripped.set()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a polite close
        self._writers.clear()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, upstream_w}
        tasks = [
            asyncio.ensure_future(self._client_to_upstream(client_r, upstream_w)),
            asyncio.ensure_future(self._pipe(upstream_r, client_w)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_w, upstream_w):
                self._writers.discard(writer)
                with contextlib.suppress(Exception):
                    writer.close()

    async def _client_to_upstream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        tail = b""
        while data := await reader.read(65536):
            pattern = self._pattern
            if isinstance(pattern, re.Pattern):
                if pattern.search(tail + data):
                    await self._cut()
                    return
                tail = data[-REGEX_WINDOW:]
            elif pattern is not None:
                if pattern in tail + data:
                    await self._cut()
                    return
                tail = data[-(len(pattern) - 1) :] if len(pattern) > 1 else b""
            writer.write(data)
            await writer.drain()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
