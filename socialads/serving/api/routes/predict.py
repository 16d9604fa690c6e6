"""POST /predict and POST /predict/batch.

/predict is the hot path. It reads its body itself with ``PredictRequest.model_validate_json``
(JSON and constraints in pydantic-core, one pass) instead of a FastAPI body parameter, which
would add FastAPI's content-type parsing, ``json.loads`` and a second validation pass; its
body is documented with ``openapi_extra`` (``PredictRequest`` is in the components through
the batch body). It answers bytes rendered from pre-encoded pieces: the ``response_model``
documents them, no serialiser runs.

The batch limit is a setting, so it is checked here from the settings dependency (413) rather
than declared in the body model, whose class is fixed when the route is defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from socialads.data.schema import LABELS
from socialads.serving.api import deps, errors
from socialads.serving.api.deps import (
    REQUEST_ID_HEADER,
    MetricsDep,
    PredictionRecorder,
    RequestId,
    SettingsDep,
    StoreDep,
)
from socialads.serving.metrics import ServingMetrics
from socialads.serving.model_store import LoadedModel
from socialads.serving.predlog import ProductionLog
from socialads.serving.schemas import (
    BatchRequest,
    BatchResponse,
    PredictRequest,
    PredictResponse,
    field_problems,
)

JSON = "application/json"
_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
    }
}


def _sent_json(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """True when the Content-Type is JSON (``application/json`` or ``*/*+json``)."""
    for name, value in headers:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return False


router = APIRouter(tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={**errors.BAD_INPUT, **errors.NOT_READY},
    summary="Predict one user",
    openapi_extra=_PREDICT_BODY,
)
async def predict(request: Request) -> Response:
    """Whether the user buys (1, COMPRA) or not (0, NO COMPRA), with P(1)."""
    # No dependency parameters here: each costs FastAPI's solver ~10 µs a request, several
    # % of this route's throughput (benchmarks/api_throughput.py); the same accessors are
    # called directly instead.
    body = await request.body()
    if not _sent_json(request.scope["headers"]):
        raise errors.invalid_body(body, json_content_type=False)
    try:
        record = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise errors.invalid_body(body, errors=exc.errors(include_url=False)) from None
    model = deps.store_of(request).require()  # read once: a reload rebinds, never mutates
    prediction, probability = await model.batcher.predict(record.gender, record.age, record.salary)
    deps.metrics_of(request).count_prediction(prediction)
    rid = deps.request_id_of(request)
    recorder = deps.recorder_of(request)
    if recorder is not None:
        features = (record.gender, record.age, record.salary)
        recorder.prediction(rid, "api", model.version, features, probability, prediction)
    return Response(
        model.render(prediction, probability, rid),
        media_type=JSON,
        headers={REQUEST_ID_HEADER: rid},
    )


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses={**errors.BAD_INPUT, **errors.NOT_READY},
    summary="Predict many users",
)
async def predict_batch(
    batch: BatchRequest,
    settings: SettingsDep,
    store: StoreDep,
    rid: RequestId,
    recorder: PredictionRecorder,
    metrics: MetricsDep,
) -> Response:
    """Predictions for the valid rows; every invalid row is listed in ``errors``."""
    records = batch.records
    if len(records) > settings.batch_max_records:
        raise errors.too_many_records(settings.batch_max_records, len(records))
    model = store.require()
    body = predict_rows(model, records, metrics, rid, recorder)
    return JSONResponse(body, headers={REQUEST_ID_HEADER: rid})


def predict_rows(
    model: LoadedModel,
    records: Sequence[Any],
    metrics: ServingMetrics,
    rid: str,
    recorder: ProductionLog | None,
) -> dict[str, Any]:
    """Validate each row on its own, predict the valid ones in one call, log them."""
    indices: list[int] = []
    genders: list[str] = []
    ages: list[float] = []
    salaries: list[float] = []
    problems: list[dict[str, Any]] = []
    for index, row in enumerate(records):
        try:
            record = PredictRequest.model_validate(row)
        except ValidationError as exc:
            for problem in field_problems(exc.errors(), whole="record"):
                problems.append({"index": index, **problem.model_dump()})
            continue
        indices.append(index)
        genders.append(record.gender)
        ages.append(record.age)
        salaries.append(record.salary)
    results: list[dict[str, Any]] = []
    if indices:
        classes, probabilities = model.engine.predict_many(genders, ages, salaries)
        class_list = [int(c) for c in classes.tolist()]
        ones = sum(class_list)
        metrics.count_predictions(ones, len(class_list) - ones)
        p1 = probabilities.tolist()
        rids = [f"{rid}-{index}" for index in indices]
        for index, row_id, prediction, probability in zip(
            indices, rids, class_list, p1, strict=True
        ):
            results.append(
                {
                    "index": index,
                    "prediction": prediction,
                    "label": LABELS[prediction],
                    "probability": probability,
                    "request_id": row_id,
                }
            )
        if recorder is not None:
            features = list(zip(genders, ages, salaries, strict=True))
            recorder.predictions_of(rids, "batch", model.version, features, p1, class_list)
    return {
        "model_version": model.version,
        "request_id": rid,
        "count": len(records),
        "results": results,
        "errors": problems,
    }


__all__ = ["predict_rows", "router"]
