"""The API's dependencies, as ``Annotated`` aliases for the routes' signatures.

The app's long-lived objects (settings, model store, metrics, prediction log) are built once
by :func:`socialads.serving.app.create_app` and kept on ``app.state``; the dependencies below
hand them to the routes, so no module holds any of them.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, cast

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException

from socialads.serving.metrics import ServingMetrics
from socialads.serving.model_store import LoadedModel, ModelStore
from socialads.serving.predlog import ProductionLog, request_id
from socialads.settings import Settings

if TYPE_CHECKING:
    from starlette.datastructures import State

API_KEY_HEADER = "X-API-Key"  # pragma: allowlist secret (a header name)
REQUEST_ID_HEADER = "X-Request-ID"


# Plain accessors: /predict calls them directly (see socialads.serving.api.routes.predict),
# the dependencies below wrap them for every other route.
def settings_of(request: Request) -> Settings:
    """The settings the app was built with."""
    return cast(Settings, _state(request).settings)


def store_of(request: Request) -> ModelStore:
    """The model store (the served model, its reloads)."""
    return cast(ModelStore, _state(request).store)


def metrics_of(request: Request) -> ServingMetrics:
    """The app's Prometheus metrics."""
    return cast(ServingMetrics, _state(request).metrics)


def production_log_of(request: Request) -> ProductionLog:
    """The prediction and feedback logs."""
    return cast(ProductionLog, _state(request).production_log)


def recorder_of(request: Request) -> ProductionLog | None:
    """Where predictions are recorded; None when SOCIALADS_PREDICTION_LOG is off."""
    return production_log_of(request) if settings_of(request).prediction_log else None


def request_id_of(request: Request) -> str:
    """The request's id: its ``X-Request-ID`` when sane, else a new one."""
    return request_id(request.headers.get(REQUEST_ID_HEADER))


def _state(request: Request) -> State:
    return cast("State", request.app.state)


# Async: FastAPI runs a plain ``def`` dependency in its thread pool.
async def get_settings(request: Request) -> Settings:
    """Dependency: the settings."""
    return settings_of(request)


async def get_store(request: Request) -> ModelStore:
    """Dependency: the model store."""
    return store_of(request)


async def get_metrics(request: Request) -> ServingMetrics:
    """Dependency: the metrics."""
    return metrics_of(request)


async def get_production_log(request: Request) -> ProductionLog:
    """Dependency: the prediction and feedback logs."""
    return production_log_of(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]
ProductionLogDep = Annotated[ProductionLog, Depends(get_production_log)]


async def served_model(store: StoreDep) -> LoadedModel:
    """The model being served, read once (raises ModelNotReadyError → 503)."""
    return store.require()


ServedModel = Annotated[LoadedModel, Depends(served_model)]


async def prediction_recorder(request: Request) -> ProductionLog | None:
    """Dependency: where predictions are recorded (None: the log is off)."""
    return recorder_of(request)


PredictionRecorder = Annotated[ProductionLog | None, Depends(prediction_recorder)]


async def get_request_id(request: Request) -> str:
    """Dependency: the request's id (its sane ``X-Request-ID``, else a new one)."""
    return request_id_of(request)


RequestId = Annotated[str, Depends(get_request_id)]

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Needed by /predict, /predict/batch, /feedback and /admin/* when the key is set.",
)


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]
) -> None:
    """401 unless the request's X-API-Key is the configured key (when one is configured)."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    # compare_digest: the time taken does not tell how much of the key matched.
    if key is None or not hmac.compare_digest(key.encode(), expected):
        raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")
