"""GET /health, /ready, /model and /metrics: what operators and probes read (never keyed)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from socialads.serving.api import errors
from socialads.serving.api.deps import MetricsDep, ServedModel, StoreDep
from socialads.serving.metrics import CONTENT_TYPE
from socialads.serving.schemas import ModelInfo, ReadyResponse

router = APIRouter(tags=["ops"])

_HEALTHY = b'{"status":"ok"}'


@router.get("/health", summary="Liveness")
async def health() -> Response:
    """Always 200 while the process serves HTTP; touches nothing else."""
    return Response(_HEALTHY, media_type="application/json")


@router.get("/ready", response_model=ReadyResponse, responses=errors.NOT_READY, summary="Readiness")
async def ready(store: StoreDep) -> JSONResponse:
    """200 once a model is loaded, 503 before (with the reason)."""
    model = store.require()
    return JSONResponse({"status": "ready", "model_version": model.version})


@router.get("/model", response_model=ModelInfo, responses=errors.NOT_READY)
async def model_info(model: ServedModel) -> JSONResponse:
    """The served model: registry name, version, alias, run, metrics, engine."""
    return JSONResponse(model.describe())


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(metrics: MetricsDep) -> Response:
    """Prometheus text format (summed over workers when several run)."""
    return Response(metrics.render(), media_type=CONTENT_TYPE)
