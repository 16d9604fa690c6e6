"""Shared fixtures: an isolated environment for everything that reads settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ISOLATED_VARS = (
    "SOCIALADS_HOME",
    "SOCIALADS_LAKE_URL",
    "SOCIALADS_DATA_BUCKET",
    "DATA_REPO_BUCKET_NAME",
    "SOCIALADS_S3_ENDPOINT_URL",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "SOCIALADS_S3_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "MINIO_ACCESS_KEY",
    "SOCIALADS_S3_SECRET_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "MINIO_SECRET_ACCESS_KEY",
    "SOCIALADS_TRACKING_URI",
    "MLFLOW_TRACKING_URI",
    "SOCIALADS_PREFECT_API_URL",
    "PREFECT_API_URL",
    "SOCIALADS_CANDIDATES",
    "SOCIALADS_API_KEY",
)


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
