"""Run the API under uvicorn: ``socialads serve`` (:func:`run`) and the worker factory.

One worker: the app is built here, in this process, from the settings ``run`` was given.
Several workers: uvicorn starts new processes that import :func:`app_factory` (uvicorn's
``factory=True``), and each builds its settings once from the environment. So that the
workers see exactly the parent's settings, ``run`` first exports the values that the
environment alone would not give (the CLI's options, such as ``--reload-interval``), and
points prometheus-client's multiprocess mode at a private folder so that ``/metrics`` sums
over the workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from socialads.errors import ConfigurationError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from socialads.serving.model_store import LoadedModel
    from socialads.settings import Settings

PROMETHEUS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def settings_from_environment() -> Settings:
    """Build the settings; raises ConfigurationError naming the invalid variables."""
    from pydantic import ValidationError

    from socialads.settings import describe_problems, load_settings

    try:
        settings = load_settings()
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {describe_problems(exc)}") from exc
    check_serving_settings(settings)
    return settings


def check_serving_settings(settings: Settings) -> None:
    """What pydantic cannot tell: settings that are valid values but unusable for serving."""
    if settings.api_key is not None and not settings.api_key.get_secret_value().strip():
        raise ConfigurationError(
            "invalid settings: SOCIALADS_API_KEY is set but empty; "
            "unset it to serve without a key, or give it a value"
        )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for ``settings`` (the benchmark serves with the same ones)."""
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "access_log": False,  # a log line per request costs more than a prediction
        "proxy_headers": True,
        "server_header": False,
        "lifespan": "on",
        "log_level": "info",
        "timeout_graceful_shutdown": 10,
    }


def load_at_start(settings: Settings) -> LoadedModel:
    """Load the champion and start its engine now (raises NoChampionError / RegistryError)."""
    from socialads.serving.model_store import ModelStore

    return ModelStore(settings).load_blocking()


def run(settings: Settings | None = None) -> None:
    """Serve the API with uvicorn until stopped (host, port and workers from ``settings``).

    Missing or malformed settings raise :class:`ConfigurationError` (the CLI prints it and
    exits with code 2). With ``require_model_at_start`` the champion is loaded before
    uvicorn starts and its absence raises NoChampionError / RegistryError (non-zero exit);
    by default the API starts without one and the poller keeps trying (see
    :class:`socialads.serving.model_store.ModelStore`).
    """
    if settings is None:
        settings = settings_from_environment()
    check_serving_settings(settings)
    _show_serving_logs()
    preloaded = load_at_start(settings) if settings.require_model_at_start else None

    import uvicorn

    options = uvicorn_options(settings)
    if settings.api_workers == 1:
        from socialads.serving.app import create_app

        uvicorn.run(create_app(settings, preloaded=preloaded), **options)
        return
    # Several workers: the load above only made the start fail fast; each worker loads
    # its own copy (and fails its start the same way without one).
    del preloaded
    with _worker_environment(settings):
        uvicorn.run(
            f"{__name__}:app_factory", factory=True, workers=settings.api_workers, **options
        )


def app_factory() -> FastAPI:
    """uvicorn's factory (``uvicorn --factory socialads.serving.server:app_factory``).

    Called once per worker process: builds that process's settings, then the app. Invalid
    settings end the process with code 2 and a one-line message.
    """
    try:
        settings = settings_from_environment()
    except ConfigurationError as exc:
        logging.getLogger("uvicorn.error").error("%s", exc)
        raise SystemExit(exc.exit_code) from exc
    _show_serving_logs()
    from socialads.serving.app import create_app

    return create_app(settings)


def _show_serving_logs() -> None:
    """Model loads and reload failures are worth seeing at the default log level."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("socialads.serving").setLevel(logging.INFO)


@contextlib.contextmanager
def _worker_environment(settings: Settings) -> Iterator[None]:
    """Export ``settings`` and the metrics folder to the workers uvicorn is about to start.

    Written into this process's environment, which the spawned workers inherit; this
    process only supervises them from here on.
    """
    metrics_dir = Path(tempfile.mkdtemp(prefix="socialads-metrics-"))
    os.environ.update({**worker_variables(settings), PROMETHEUS_DIR_VARIABLE: str(metrics_dir)})
    try:
        yield
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_variables(settings: Settings) -> dict[str, str]:
    """``SOCIALADS_*`` variables of the settings that differ from the environment's own."""
    from pydantic import SecretStr, ValidationError

    from socialads.settings import Settings as SettingsClass
    from socialads.settings import env_names

    try:
        baseline: Settings | None = SettingsClass()
    except ValidationError:
        baseline = None
    variables: dict[str, str] = {}
    for name in SettingsClass.model_fields:
        value = getattr(settings, name)
        if value is None or (baseline is not None and getattr(baseline, name) == value):
            continue
        variable = env_names(name)[0]
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, list | tuple):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        variables[variable] = text
    return variables
