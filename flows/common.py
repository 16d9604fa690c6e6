"""What every flow shares: settings built at flow entry, task defaults."""

from __future__ import annotations

from typing import Any

from socialads.errors import LakeError
from socialads.settings import Settings, env_names, load_settings


def flow_settings(**overrides: Any) -> Settings:
    """The flow's settings: environment and ``.env``, with the flow's non-null parameters."""
    given = {env_names(key)[0]: value for key, value in overrides.items() if value is not None}
    return load_settings(**given)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry lake I/O only when the failure looks transient."""
    try:
        state.result()
    except LakeError as exc:
        return exc.transient
    except Exception:
        return False
    return False
