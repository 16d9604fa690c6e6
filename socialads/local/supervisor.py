"""Start, health-wait and stop local servers, whichever server it is.

A :class:`Service` declares one server (command line, environment, health check; see
:mod:`socialads.local.servers`). :func:`launch` starts it in a process group of its own with
its output in a log file; :func:`wait_healthy` polls health checks with back-off until they
pass, failing fast with the log's tail when a server exits first; :func:`stop` ends whole
process groups, SIGTERM first and SIGKILL after a grace period. A :class:`ProcessRecord`, kept
in a JSON state file, lets a later process find and stop what an earlier one started; the
process's start time tells a reused pid apart.

Polling with back-off is tenacity's; finding a group's processes and telling a reused pid
apart is psutil's. This module launches subprocesses, so it is the one place that reads
``os.environ``: the base of each server's explicit environment, without the tools' variables.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_exponential

from socialads.errors import ServiceError

HOST = "127.0.0.1"
# The callers' settings for these tools must not leak into a server: each server gets the
# variables its declaration names, over the rest of the caller's environment (PATH, HOME, ...).
SCRUBBED_PREFIXES = ("AWS_", "MLFLOW_", "PREFECT_", "SOCIALADS_", "MINIO_", "S3_")
LOG_TAIL_LINES = 20
# Health polls after 0.1, 0.2, 0.4, 0.8 s, then every second: quick for a fast server, light
# on a loaded machine while a slow one (Prefect: 15-25 s) starts.
BACKOFF = wait_exponential(multiplier=0.1, max=1.0)
_NOT_LIVE = {psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD}


@dataclass(frozen=True)
class Service:
    """One server: what runs, with which variables, and how to tell that it serves."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    health: Callable[[], bool]
    health_url: str
    dirs: tuple[Path, ...] = ()
    """Folders that must exist before it starts."""


@dataclass(frozen=True)
class ProcessRecord:
    """A started server as a state file keeps it."""

    pid: int
    created: float | None
    """psutil's create_time of the process: a pid reused by another process has another one
    (None in records written before it was kept)."""
    log: str = ""
    argv: tuple[str, ...] = ()
    started_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object."""
        return {**asdict(self), "argv": list(self.argv)}

    @classmethod
    def from_json(cls, data: object) -> ProcessRecord | None:
        """The record in ``data``; None when it is not one (a damaged state file)."""
        if not isinstance(data, Mapping):
            return None
        try:
            created = data.get("created")
            return cls(
                pid=int(data["pid"]),
                created=None if created is None else float(created),
                log=str(data.get("log", "")),
                argv=tuple(str(arg) for arg in data.get("argv", ())),
                started_at=float(data.get("started_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def running(self) -> bool:
        """Whether the process group started for this record still has a live process."""
        if self.created is not None:
            try:
                created = psutil.Process(self.pid).create_time()
            except psutil.NoSuchProcess:
                # The leader is gone. The kernel gives no new process the pid of a group that
                # still has members, so the members found below are still ours.
                pass
            else:
                if not math.isclose(created, self.created, abs_tol=0.01):
                    return False  # the pid belongs to another process now
        return bool(group_members(self.pid))


@dataclass
class Launched:
    """A server this process started."""

    service: Service
    process: subprocess.Popen[bytes]
    record: ProcessRecord

    @property
    def log(self) -> Path:
        """The file the server writes its output to."""
        return Path(self.record.log)

    def log_tail(self) -> str:
        """The last lines of the server's log, introduced by its path."""
        return f"last lines of {self.log}:\n{tail(self.log)}"


def launch(service: Service, *, log: Path, cwd: Path) -> Launched:
    """Start ``service`` in a new process group (session), its output appended to ``log``."""
    argv = [resolve(service.argv[0]), *service.argv[1:]]
    for folder in (cwd, log.parent, *service.dirs):
        folder.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=server_env(service.env),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # Not reaped yet, so readable even if it has exited already.
    created = psutil.Process(process.pid).create_time()
    record = ProcessRecord(process.pid, created, str(log), tuple(argv), time.time())
    return Launched(service, process, record)


def poll_until(check: Callable[[], bool], timeout: float) -> bool:
    """Call ``check`` with back-off until it returns True (then True) or ``timeout`` seconds
    pass (then False). An exception from ``check`` ends the wait at once."""
    retrying = Retrying(
        retry=retry_if_result(lambda done: not done),
        stop=stop_after_delay(timeout),
        wait=BACKOFF,
        retry_error_callback=lambda _state: False,
    )
    return bool(retrying(check))


def wait_healthy(
    launched: Sequence[Launched],
    timeout: float,
    on_healthy: Callable[[Launched, float], None] | None = None,
) -> dict[str, float]:
    """Poll the health checks of ``launched`` together until each passes; the seconds each took.

    Raises :class:`ServiceError`, naming the server and quoting its log, when one exits before
    it is healthy or is still not healthy after ``timeout`` seconds. Stopping what was
    started is the caller's choice.
    """
    pending = {item.service.name: item for item in launched}
    begun = time.monotonic()
    timings: dict[str, float] = {}

    def all_healthy() -> bool:
        for name, item in sorted(pending.items()):
            code = item.process.poll()
            if code is not None:
                raise ServiceError(
                    f"{name} exited with code {code} before it was healthy; {item.log_tail()}",
                    service=name,
                )
            if item.service.health():
                timings[name] = round(time.monotonic() - begun, 2)
                del pending[name]
                if on_healthy is not None:
                    on_healthy(item, timings[name])
        return not pending

    if not poll_until(all_healthy, timeout):
        name, item = min(pending.items())
        raise ServiceError(
            f"{name} not healthy after {timeout:.0f}s ({item.service.health_url}); "
            + item.log_tail(),
            service=name,
        )
    return timings


def stop(
    records: Mapping[str, ProcessRecord],
    grace: float,
    notify: Callable[[str], None] | None = None,
) -> list[str]:
    """End the process groups of ``records`` that still run: SIGTERM to every group, SIGKILL to
    what is left after ``grace`` seconds. Returns the names of those that were running."""
    running = {name: rec for name, rec in records.items() if rec.running()}

    def gone() -> bool:
        return not any(group_members(rec.pid) for rec in running.values())

    for rec in running.values():
        _signal_group(rec.pid, signal.SIGTERM)
    if not poll_until(gone, grace):
        for name, rec in running.items():
            if group_members(rec.pid):
                if notify is not None:
                    notify(f"{name} still running {grace:g}s after SIGTERM: SIGKILL")
                _signal_group(rec.pid, signal.SIGKILL)
        if not poll_until(gone, 10.0):
            left = {name: group_members(rec.pid) for name, rec in running.items()}
            raise ServiceError(f"processes left after SIGKILL: {left}", service="stop")
    return list(running)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] not in _NOT_LIVE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


# -- state files -------------------------------------------------------------------------------


def read_state(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when the file is missing or damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``state`` as JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- helpers -----------------------------------------------------------------------------------


def resolve(program: str) -> str:
    """The executable ``program`` next to this interpreter (the venv), else on PATH."""
    found = shutil.which(program, path=str(Path(sys.executable).parent)) or shutil.which(program)
    if not found:
        raise ServiceError(
            f"{program!r} not found next to {sys.executable} nor on PATH", service=program
        )
    return found


def server_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A server's whole environment: this process's without the tools' variables, plus
    ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    return {**base, **extra}


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return False


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_ports() -> range:
    """The kernel's ephemeral (client) port range."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        low, high = "32768", "60999"
    return range(int(low), int(high) + 1)


def free_port(host: str = HOST, start: int = 10000) -> int:
    """A free port between ``start`` and the ephemeral range.

    Outside the ephemeral range a health poll of a port nobody listens on yet cannot connect
    to itself (TCP self-connect), nor can a client's socket squat the server's port.
    """
    candidates = range(start, ephemeral_ports().start)
    first = secrets.randbelow(len(candidates))
    for step in range(len(candidates)):
        port = candidates[(first + step) % len(candidates)]
        if port_free(host, port):
            return port
    raise ServiceError(f"no free port between {start} and {candidates.stop}", service="ports")
