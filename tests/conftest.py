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


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a fast stand-in; the integration tests run a real
    S3-compatible server), the settings' endpoint and keys pointed at it; its endpoint URL.
    moto keeps its buckets per process: they are reset afterwards, so no test sees another's."""
    import httpx
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("SOCIALADS_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    try:
        yield endpoint
    finally:
        httpx.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()
