"""Fixtures of the integration tests: one real stack (S3, MLflow, Prefect) per test session.

``stack`` (session) starts the native stack (:mod:`socialads.local.stack`, what
scripts/stack.py runs) once, in a temporary dir, on a free port block, with databases of a
unique prefix that are dropped at the end. It yields a :class:`StackHandle`; ``stack.env`` is
what a socialads process needs (pass it to a subprocess as ``env=stack.subprocess_env()``).
``stack_env`` (function) applies that env to this process for one test, Prefect's frozen
settings included. Tests that start servers of their own use socialads.local as well.

Knobs: ``SOCIALADS_TEST_STACK_BASE_PORT`` pins the ports; the ``SOCIALADS_STACK_*``
variables of the stack (timeout, PostgreSQL DSN, ...) apply as well.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from socialads.local.stack import Stack, StackConfig, free_base_port
from socialads.local.supervisor import group_members


@dataclasses.dataclass
class StackHandle:
    """A running stack as the tests see it."""

    env: dict[str, str]
    ports: dict[str, int]
    state_dir: Path
    prefect_home: Path
    databases: list[str]
    launcher: Stack = dataclasses.field(repr=False)

    @property
    def s3_port(self) -> int:
        """Port of the S3 API."""
        return self.ports["s3"]

    @property
    def mlflow_port(self) -> int:
        """Port of the MLflow server."""
        return self.ports["mlflow"]

    @property
    def prefect_port(self) -> int:
        """Port of the Prefect server."""
        return self.ports["prefect"]

    @property
    def s3_endpoint_url(self) -> str:
        """The S3 endpoint."""
        return self.env["SOCIALADS_S3_ENDPOINT_URL"]

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking URI."""
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def prefect_api_url(self) -> str:
        """The Prefect API URL (ends in /api)."""
        return self.env["PREFECT_API_URL"]

    @property
    def access_key(self) -> str:
        """The S3 access key."""
        return self.env["AWS_ACCESS_KEY_ID"]

    @property
    def secret_key(self) -> str:
        """The S3 secret key."""
        return self.env["AWS_SECRET_ACCESS_KEY"]

    def subprocess_env(self) -> dict[str, str]:
        """``os.environ`` with the stack's variables on top, for ``subprocess.run(env=...)``."""
        return {**os.environ, **self.env}

    def s3fs(self, secret: str | None = None) -> Any:
        """An uncached s3fs filesystem on the stack (optionally with another secret)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=self.access_key,
            secret=self.secret_key if secret is None else secret,
            client_kwargs={"endpoint_url": self.s3_endpoint_url, "region_name": "us-east-1"},
            config_kwargs={"retries": {"max_attempts": 1}},
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    @contextlib.contextmanager
    def activate(self) -> Iterator[StackHandle]:
        """Point this process at the stack: env vars, and Prefect's settings context."""
        # Prefect freezes its settings from the environment at import time: import it
        # before the variables change, then overlay them for the duration only.
        import prefect.settings as ps

        with pytest.MonkeyPatch.context() as mp:
            for key, value in self.env.items():
                mp.setenv(key, value)
            with ps.temporary_settings(
                updates={
                    ps.PREFECT_API_URL: self.prefect_api_url,
                    ps.PREFECT_HOME: self.prefect_home,
                }
            ):
                # Another test in this process may have set MLflow's URIs explicitly (which
                # beats the environment); point them at the stack and restore them afterwards.
                import mlflow

                tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
                mlflow.set_tracking_uri(self.mlflow_url)
                mlflow.set_registry_uri(self.mlflow_url)
                try:
                    yield self
                finally:
                    mlflow.set_tracking_uri(tracking)
                    mlflow.set_registry_uri(registry)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    """Start the stack once per session; stop it, drop its databases and check nothing is left."""
    base = os.environ.get("SOCIALADS_TEST_STACK_BASE_PORT")
    base_port = int(base) if base else free_base_port()
    state_dir = tmp_path_factory.mktemp("stack")
    prefix = f"it_{os.getpid()}_{secrets.token_hex(3)}_"
    cfg = StackConfig.from_env(os.environ, state_dir, base_port, db_prefix=prefix, drop_dbs=True)
    launcher = Stack(cfg)
    client_home = state_dir / "prefect-client-home"
    client_home.mkdir()
    env = {**launcher.up(), "PREFECT_HOME": str(client_home)}
    handle = StackHandle(
        env=env,
        ports=cfg.ports.all(),
        state_dir=state_dir,
        prefect_home=client_home,
        databases=[cfg.mlflow_db, cfg.prefect_db],
        launcher=launcher,
    )
    pids = [rec["pid"] for rec in launcher.read_state()["services"].values()]
    # The client side never uses the developer's ~/.prefect (profiles, ephemeral server DB).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(client_home))
        try:
            yield handle
        finally:
            launcher.down()
    left = {pid: group_members(pid) for pid in pids}
    assert not any(left.values()), f"processes left behind by the stack: {left}"


@pytest.fixture
def stack_env(stack: StackHandle) -> Iterator[StackHandle]:
    """The stack, with its environment applied to this process for one test."""
    with stack.activate():
        yield stack
