"""POST /predict and POST /predict/batch, added to the app by :func:`add_routes`.

/predict is the hot path, and three choices keep it as fast as before the app was split
into routers (``benchmarks/api_throughput.py``, LR family, req/s of the real app over the
bare one in the same run):

- its routes are added to the app itself, not through ``include_router``: FastAPI 0.150
  dispatches a request to an included router's route in two passes (about 8% of /predict's
  throughput here);
- it takes no dependency parameter: FastAPI's solver costs about 10 µs per dependency, and it
  reads :class:`~socialads.serving.api.deps.Services` directly instead (one lookup);
- it reads its body itself with ``PredictRequest.model_validate_json`` (JSON and constraints
  in pydantic-core, one pass): a FastAPI body parameter adds content-type parsing,
  ``json.loads`` and a second validation pass. The body is documented with
  ``openapi_extra`` (``PredictRequest`` is in the components through the batch body), and the
  answer is bytes rendered from pre-encoded pieces: the ``response_model`` documents them, no
  serialiser runs.

The batch limit is a setting, so /predict/batch checks it from the settings dependency (413)
rather than declaring it in the body model, whose class is fixed when the route is defined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response, params
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
_REQUEST_ID_RAW = REQUEST_ID_HEADER.lower().encode()
_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
    }
}


def _json_and_request_id(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bool, str | None]:
    """Whether the Content-Type is JSON (``application/json`` or ``*/*+json``), and the
    ``X-Request-ID`` sent: the first of each, in one pass over the raw headers."""
    media: bytes | None = None
    sent_id: str | None = None
    for name, value in headers:
        if name == b"content-type" and media is None:
            media = value.split(b";", 1)[0].strip().lower()
        elif name == _REQUEST_ID_RAW and sent_id is None:
            sent_id = value.decode("latin-1")
    json_sent = media is not None and (
        media == b"application/json"
        or (media.startswith(b"application/") and media.endswith(b"+json"))
    )
    return json_sent, sent_id


async def predict(request: Request) -> Response:
    """Whether the user buys (1, COMPRA) or not (0, NO COMPRA), with P(1)."""
    body = await request.body()
    json_sent, sent_id = _json_and_request_id(request.scope["headers"])
    if not json_sent:
        raise errors.invalid_body(body, json_content_type=False)
    try:
        record = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise errors.invalid_body(body, errors=exc.errors(include_url=False)) from None
    services = deps.services_of(request)
    model = services.store.require()  # read once: a reload rebinds, never mutates
    prediction, probability = await model.batcher.predict(record.gender, record.age, record.salary)
    services.metrics.count_prediction(prediction)
    rid = services.request_ids(sent_id)
    recorder = services.recorder
    if recorder is not None:
        features = (record.gender, record.age, record.salary)
        recorder.prediction(rid, "api", model.version, features, probability, prediction)
    return Response(
        model.render(prediction, probability, rid),
        media_type=JSON,
        headers={REQUEST_ID_HEADER: rid},
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


def add_routes(
    app: FastAPI,
    *,
    dependencies: Sequence[params.Depends] = (),
    responses: Mapping[int | str, dict[str, Any]] | None = None,
) -> None:
    """Add /predict and /predict/batch to ``app`` (``dependencies``, ``responses``: the
    app's guard and its documented limits)."""
    common: dict[str, Any] = {
        "methods": ["POST"],
        "tags": ["predict"],
        "dependencies": dependencies,
    }
    documented = {**(responses or {}), **errors.BAD_INPUT, **errors.NOT_READY}
    app.add_api_route(
        "/predict",
        predict,
        response_model=PredictResponse,
        responses=documented,
        summary="Predict one user",
        openapi_extra=_PREDICT_BODY,
        **common,
    )
    app.add_api_route(
        "/predict/batch",
        predict_batch,
        response_model=BatchResponse,
        responses=documented,
        summary="Predict many users",
        **common,
    )


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


__all__ = ["add_routes", "predict_rows"]
