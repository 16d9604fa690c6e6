"""Prefect's runtime for socialads: its environment, and the embedded default's server.

Prefect reads its settings when it is first imported, so :func:`prepare_prefect` runs at the
edge (CLI command) before any ``import prefect``. With no API URL configured, the local
Prefect server of :mod:`socialads.local.embedded` (kept under ``<home>/prefect`` and reused
across commands) is the API.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from socialads.local.embedded import ensure_local_server

if TYPE_CHECKING:
    from socialads.settings import Settings


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


def prepare_prefect(settings: Settings, notify: Callable[[str], None] | None = None) -> str:
    """Export Prefect's environment for this process (before importing prefect).

    Returns the API URL in use: the configured server, or the local one (started if needed).
    """
    env = prefect_environment(settings)
    if "PREFECT_API_URL" not in env:
        env["PREFECT_API_URL"] = ensure_local_server(settings.prefect_home, notify).api_url
    os.environ.update(env)
    return env["PREFECT_API_URL"]


@contextmanager
def attended_run() -> Iterator[None]:
    """Prefect settings for flows this process runs in front of its user (``socialads train``,
    ``monitor --retrain``): no flow-run heartbeats.

    Heartbeats only feed Prefect's detection of crashed runs (an automation a deployment's
    owner may set up); here the user sees the crash. Each sync flow run also waits for its
    heartbeat thread's current 1 s sleep at exit — up to a second per (sub)flow.
    Deployment runs keep them.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
