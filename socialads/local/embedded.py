"""The embedded default's Prefect server: started once under ``<home>/prefect``, reused by the
commands after it, stopped by ``socialads local stop``.

With no API URL, Prefect would start a throw-away server in every process (about 20 s here).
This one is the Prefect server of :mod:`socialads.local.servers` on SQLite in the Prefect home,
UI off. Its record (pid, start time, URL) is ``server.json`` there, its output ``server.log``;
the lock ``server.lock`` keeps two commands from starting two servers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from socialads.errors import ServiceError
from socialads.local import supervisor
from socialads.local.servers import prefect_server
from socialads.local.supervisor import HOST, ProcessRecord

START_TIMEOUT = 120.0
# A recorded server that runs but does not answer for this long is replaced.
REUSE_TIMEOUT = 20.0
STOP_GRACE = 15.0
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
LOG_FILE = "server.log"


@dataclass(frozen=True)
class LocalServer:
    """The local Prefect server."""

    pid: int
    url: str

    @property
    def api_url(self) -> str:
        """The API root clients use."""
        return f"{self.url}/api"


def _healthy(url: str) -> bool:
    return supervisor.http_ok(f"{url}/api/health")


def _recorded(home: Path) -> tuple[ProcessRecord, str] | None:
    state = supervisor.read_state(home / STATE_FILE)
    record = ProcessRecord.from_json(state)
    url = state.get("url")
    if record is None or not isinstance(url, str):
        return None
    return record, url


def read_local_server(home: Path) -> LocalServer | None:
    """The server recorded under the Prefect home ``home``, if it runs and answers."""
    found = _recorded(home)
    if found is None:
        return None
    record, url = found
    return LocalServer(record.pid, url) if record.running() and _healthy(url) else None


def ensure_local_server(home: Path, notify: Callable[[str], None] | None = None) -> LocalServer:
    """Reuse the server recorded under ``home``, or start one and wait until it is healthy.

    A state file whose server is gone (stopped, killed, the machine restarted) is replaced.
    Raises :class:`ServiceError` with the tail of the server's log when it cannot start.
    """
    with supervisor.locked(home / LOCK_FILE):
        found = _recorded(home)
        if found is not None and found[0].running():
            record, url = found
            if supervisor.poll_until(lambda: _healthy(url), REUSE_TIMEOUT):
                return LocalServer(record.pid, url)
            if notify is not None:
                notify(f"the local Prefect server at {url} does not answer: restarting it")
            supervisor.stop({"prefect": record}, STOP_GRACE)
        port = supervisor.free_port(HOST)
        url = f"http://{HOST}:{port}"
        log = home / LOG_FILE
        if notify is not None:
            notify(f"starting the local Prefect server on {url} (once; log: {log})")
        launched = supervisor.launch(
            prefect_server(home=home, host=HOST, port=port), log=log, cwd=home
        )
        try:
            supervisor.wait_healthy([launched], START_TIMEOUT)
        except BaseException as exc:
            supervisor.stop({"prefect": launched.record}, STOP_GRACE)
            launched.process.poll()
            if isinstance(exc, ServiceError):
                raise ServiceError(
                    f"the local Prefect server could not start: {exc}", service="prefect"
                ) from exc
            raise
        supervisor.write_state(home / STATE_FILE, {**launched.record.to_json(), "url": url})
        return LocalServer(launched.record.pid, url)


def stop_local_server(home: Path, grace: float = STOP_GRACE) -> bool:
    """Stop the server recorded under ``home``; True if one was running."""
    if not (home / STATE_FILE).exists():
        return False
    with supervisor.locked(home / LOCK_FILE):
        found = _recorded(home)
        stopped = supervisor.stop({"prefect": found[0]}, grace) if found else []
        (home / STATE_FILE).unlink(missing_ok=True)
    return bool(stopped)
