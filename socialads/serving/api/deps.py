"""The API's dependencies, as ``Annotated`` aliases for the routes' signatures.

The app's long-lived objects (settings, model store, metrics, prediction log) are built once
by :func:`socialads.serving.app.create_app` and kept on ``app.state.services``
(:class:`Services`); the dependencies below hand them to the routes, so no module holds any
of them.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException

from socialads.serving.metrics import ServingMetrics
from socialads.serving.model_store import LoadedModel, ModelStore
from socialads.serving.predlog import ProductionLog, RequestIds
from socialads.settings import Settings

API_KEY_HEADER = "X-API-Key"  # pragma: allowlist secret (a header name)
REQUEST_ID_HEADER = "X-Request-ID"


@dataclass(frozen=True, slots=True)
class Services:
    """The app's long-lived objects, built once by ``create_app`` (``app.state.services``)."""

    settings: Settings
    store: ModelStore
    metrics: ServingMetrics
    production_log: ProductionLog
    request_ids: RequestIds

    @property
    def recorder(self) -> ProductionLog | None:
        """Where predictions are recorded; None when SOCIALADS_PREDICTION_LOG is off."""
        return self.production_log if self.settings.prediction_log else None


def services_of(request: Request) -> Services:
    """The services of the request's app (/predict calls this directly; see its module)."""
    return cast(Services, request.app.state.services)


def request_id_of(request: Request) -> str:
    """The request's id: its ``X-Request-ID`` when sane, else a new one."""
    return services_of(request).request_ids(request.headers.get(REQUEST_ID_HEADER))


# Async: FastAPI runs a plain ``def`` dependency in its thread pool.
async def get_settings(request: Request) -> Settings:
    """Dependency: the settings."""
    return services_of(request).settings


async def get_store(request: Request) -> ModelStore:
    """Dependency: the model store (the served model, its reloads)."""
    return services_of(request).store


async def get_metrics(request: Request) -> ServingMetrics:
    """Dependency: the metrics."""
    return services_of(request).metrics


async def get_production_log(request: Request) -> ProductionLog:
    """Dependency: the prediction and feedback logs."""
    return services_of(request).production_log


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
    return services_of(request).recorder


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
    request: Request, key: Annotated[str | None, Security(api_key_header)]
) -> None:
    """401 unless the request's X-API-Key is the configured key (when one is configured).

    Reads the settings itself rather than through ``SettingsDep``: it guards /predict, where
    every dependency costs (see socialads.serving.api.routes.predict).
    """
    configured = services_of(request).settings.api_key
    if configured is None:
        return
    # compare_digest: the time taken does not tell how much of the key matched.
    if key is None or not hmac.compare_digest(key.encode(), configured.get_secret_value().encode()):
        raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")
