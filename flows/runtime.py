"""Prefect's runtime for socialads: its environment and the embedded local API server.

Prefect reads its settings when it is first imported, so :func:`prepare_prefect` runs at the
edge (CLI command) before any ``import prefect``. With ``PREFECT_API_URL`` unset, Prefect
would start a throw-away server for every process (about 20 s here); instead socialads keeps
one local server under ``<home>/prefect`` and reuses it across commands.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from socialads.errors import ConfigurationError

if TYPE_CHECKING:
    from socialads.settings import Settings

START_TIMEOUT = 120.0
STATE_FILE = "server.json"


@dataclass(frozen=True)
class LocalServer:
    """A Prefect server this package started in the background."""

    pid: int
    url: str

    @property
    def api_url(self) -> str:
        """The API root clients use."""
        return f"{self.url}/api"


def prefect_environment(settings: Settings) -> dict[str, str]:
    """Prefect settings socialads runs with (home, analytics off, library logs forwarded)."""
    env = {
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "socialads",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    }
    if settings.prefect_api_url:
        env["PREFECT_API_URL"] = settings.prefect_api_url
    return env


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_local_server(settings: Settings) -> LocalServer | None:
    """The recorded local server, if it is still alive and healthy."""
    state = settings.prefect_home / STATE_FILE
    if not state.exists():
        return None
    try:
        data = json.loads(state.read_text())
        server = LocalServer(pid=int(data["pid"]), url=str(data["url"]))
    except (ValueError, KeyError, TypeError):
        return None
    if _alive(server.pid) and _healthy(server.url):
        return server
    return None


def _prefect_executable() -> list[str]:
    script = Path(sys.executable).with_name("prefect")
    if script.exists():
        return [str(script)]
    found = shutil.which("prefect")
    return [found] if found else [sys.executable, "-m", "prefect"]


def ensure_local_server(
    settings: Settings, notify: Callable[[str], None] | None = None
) -> LocalServer:
    """Reuse the local Prefect server or start it in the background and wait until healthy."""
    home = settings.prefect_home
    with _locked(home / "server.lock"):
        running = read_local_server(settings)
        if running is not None:
            return running
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **prefect_environment(settings), "PREFECT_UI_ENABLED": "false"}
        log_path = home / "server.log"
        if notify:
            notify(f"starting the local Prefect server on {url} (once; log: {log_path})")
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [
                    *_prefect_executable(),
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-5:]
                raise ConfigurationError(
                    f"the local Prefect server exited with {process.returncode}: "
                    + " | ".join(tail)
                )
            if _healthy(url, timeout=1.0):
                server = LocalServer(pid=process.pid, url=url)
                (home / STATE_FILE).write_text(json.dumps({"pid": server.pid, "url": url}))
                return server
            time.sleep(0.25)
        process.terminate()
        raise ConfigurationError(
            f"the local Prefect server did not become healthy in {START_TIMEOUT:.0f} s; "
            f"see {log_path}"
        )


def stop_local_server(settings: Settings, timeout: float = 15.0) -> bool:
    """Stop the local Prefect server if one runs. Returns True when one was stopped."""
    state = settings.prefect_home / STATE_FILE
    if not state.exists():
        return False
    try:
        pid = int(json.loads(state.read_text())["pid"])
    except (ValueError, KeyError, TypeError):
        state.unlink(missing_ok=True)
        return False
    stopped = False
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stopped = True
    state.unlink(missing_ok=True)
    return stopped


def prepare_prefect(settings: Settings, notify: Callable[[str], None] | None = None) -> str:
    """Export Prefect's environment for this process (before importing prefect).

    Returns the API URL in use: the configured server, or the local one (started if needed).
    """
    env = prefect_environment(settings)
    if "PREFECT_API_URL" not in env:
        env["PREFECT_API_URL"] = ensure_local_server(settings, notify).api_url
    os.environ.update(env)
    return env["PREFECT_API_URL"]
