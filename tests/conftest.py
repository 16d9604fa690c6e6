"""Shared fixtures: an isolated environment for everything that reads settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from socialads.settings import Settings, env_names

# Every variable the settings read: no test sees the developer's configuration.
ISOLATED_VARS = tuple(name for field in Settings.model_fields for name in env_names(field))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's settings or .env; each runs in its own folder."""
    for name in ISOLATED_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    yield


@pytest.fixture(scope="session")
def raw_bytes() -> bytes:
    """The bundled dataset."""
    from socialads.data.lake import bundled_dataset

    return bundled_dataset()
