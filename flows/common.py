"""What every flow shares: settings built at flow entry, task defaults."""

from __future__ import annotations

import logging
from typing import Any

from prefect.cache_policies import NO_CACHE

from socialads.errors import LakeError
from socialads.settings import Settings, settings_with


def flow_settings(**overrides: Any) -> Settings:
    """The flow's settings: environment and ``.env``, with the flow's non-null parameters.

    Also lets the library's INFO records through (Prefect forwards the ``socialads`` loggers
    to the run's log, but its root logger passes only warnings).
    """
    library = logging.getLogger("socialads")
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO)
    return settings_with(**overrides)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry lake I/O only when the failure looks transient."""
    try:
        state.result()
    except LakeError as exc:
        return exc.transient
    except Exception:
        return False
    return False


LAKE_IO: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": 2,
    "retry_condition_fn": retry_transient,
    "cache_policy": NO_CACHE,
}
"""Options of every task that reads or writes the lake: Prefect retries transient failures."""
