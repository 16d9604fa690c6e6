"""The FastAPI app: routes, the translation of errors to HTTP, the API key, the edge middleware.

Hot path of ``POST /predict``: the handler validates the raw body with
``PredictRequest.model_validate_json`` (JSON and constraints in pydantic-core, one pass),
reads the current model once, awaits its engine through a micro-batcher (the requests that
reach it in the same event-loop turn share one ONNX Runtime call, no DataFrame),
bumps one plain counter and returns bytes rendered from pre-encoded pieces, so no
response serialiser runs. Request metrics and the body limit live in one plain ASGI
middleware (:class:`EdgeMiddleware`, about 2 µs a request; ``BaseHTTPMiddleware`` costs
far more). Measured with ``benchmarks/api_throughput.py``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from time import perf_counter
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from socialads import __version__
from socialads.data.schema import LABELS
from socialads.errors import InvalidInputError, NoChampionError, RegistryError, SocialAdsError
from socialads.serving.metrics import CONTENT_TYPE, ServingMetrics
from socialads.serving.model_store import LoadedModel, Loader, ModelStore, Probe
from socialads.serving.predlog import ProductionLog, request_id
from socialads.serving.schemas import (
    FEEDBACK_BODY,
    LABEL_SHAPE,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    FeedbackItem,
    FeedbackResponse,
    FieldError,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    ReloadResponse,
    batch_request_model,
    field_problems,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from socialads.settings import Settings

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"  # pragma: allowlist secret (a header name)
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_HEADER_RAW = REQUEST_ID_HEADER.lower().encode()
JSON = "application/json"
_HEALTHY = b'{"status":"ok"}'
_JSON_TYPE = (b"content-type", JSON.encode())
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

DESCRIPTION = """
Predicts whether a social-network user buys after seeing an ad, with the model behind the
registry's champion alias (reloaded automatically when the alias moves).

`POST /predict` with `{"Gender": "Female", "Age": 45, "EstimatedSalary": 90000}` answers
`{"prediction": 1, "label": "COMPRA", "probability": ..., "model_version": "3"}`.
Invalid input gets HTTP 400 naming the field and the reason.
"""


def error_body(
    error: str, detail: str, problems: Sequence[FieldError] = (), status: int = 400
) -> JSONResponse:
    """The one error shape of the API (see :class:`ErrorResponse`)."""
    body: dict[str, Any] = {"error": error, "detail": detail}
    if problems:
        body |= {
            "field": problems[0].field,
            "reason": problems[0].reason,
            "errors": [p.model_dump() for p in problems],
        }
    return JSONResponse(body, status_code=status)


class JSONBytesResponse(Response):
    """A 200 JSON response from ready bytes (skips Response's header negotiation)."""

    media_type = JSON

    def __init__(self, body: bytes, request_id: str | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", str(len(body)).encode()), _JSON_TYPE]
        if request_id is not None:
            self.raw_headers.append((REQUEST_ID_HEADER_RAW, request_id.encode()))


def _invalid(problems: Sequence[FieldError]) -> JSONResponse:
    detail = "; ".join(f"{p.field}: {p.reason}" for p in problems)
    return error_body("invalid_input", detail, problems)


# -- the edge middleware -----------------------------------------------------------------------
class EdgeMiddleware:
    """Body-size limit (413) and request metrics for every HTTP request.

    A plain ASGI middleware: ``BaseHTTPMiddleware`` costs a task and memory streams per
    request. With a Content-Length the limit is checked from the header alone (the HTTP
    server enforces the length); a chunked body is read up to the limit first, then replayed.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._too_large = error_body(
            "payload_too_large",
            f"the request body exceeds {max_body_bytes} bytes (SOCIALADS_MAX_BODY_BYTES)",
            status=413,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500  # if the app raises before answering

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            length, chunked = _declared_body(scope["headers"])
            if length is not None:
                if length > self.max_body_bytes:
                    await self._too_large(scope, receive, send_recording)
                    return
            elif chunked:
                replay = await self._read_capped(receive)
                if replay is None:
                    await self._too_large(scope, receive, send_recording)
                    return
                receive = replay
            await self.app(scope, receive, send_recording)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            if method not in _METHODS:  # bounded label values, whatever clients send
                method = "other"
            self.metrics.observe_request(route, method, status, perf_counter() - start)

    async def _read_capped(self, receive: Receive) -> Receive | None:
        """Read a body without Content-Length; None when it exceeds the limit."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                break
        messages.reverse()

        async def replay() -> Message:
            return messages.pop() if messages else await receive()

        return replay


def _declared_body(headers: Sequence[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of a request, from its raw headers."""
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value), False
            except ValueError:
                return None, True  # let the capped reader decide
        if name == b"transfer-encoding":
            chunked = True
    return None, chunked


# -- the API key ----------------------------------------------------------------------------
def _key_guard(settings: Settings) -> list[Any]:
    """The dependency of the protected routes: none unless an API key is configured."""
    if settings.api_key is None:
        return []
    expected = settings.api_key.get_secret_value().encode()
    scheme = APIKeyHeader(
        name=API_KEY_HEADER,
        auto_error=False,
        description="Needed by /predict, /predict/batch and /admin/* when the key is set.",
    )

    async def require_api_key(key: str | None = Security(scheme)) -> None:
        # compare_digest: the time taken does not tell how much of the key matched.
        if key is None or not hmac.compare_digest(key.encode(), expected):
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")

    return [Security(require_api_key)]


# -- the app ----------------------------------------------------------------------------------
def create_app(
    settings: Settings,
    loader: Loader | None = None,
    *,
    probe: Probe | None = None,
    preloaded: LoadedModel | None = None,
) -> FastAPI:
    """Build the API around one :class:`ModelStore`.

    ``loader(settings) -> ChampionModel`` defaults to the registry's champion (with the
    cheap alias check as ``probe``); tests and benchmarks pass their own. ``preloaded``
    is served from the first request on (``run`` loads it before starting when
    ``require_model_at_start`` is set).
    """
    metrics = ServingMetrics()
    store = ModelStore(
        settings,
        loader,
        probe,
        on_swap=metrics.model_swapped,
        on_outcome=metrics.reload_outcome,
    )
    if preloaded is not None:
        store.install(preloaded)
    production = ProductionLog(settings, on_drop=metrics.prediction_log_dropped)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.require_model_at_start and store.current is None:
            try:
                await store.reload()
            except SocialAdsError as exc:
                log.error("no model at start and SOCIALADS_REQUIRE_MODEL_AT_START is set: %s", exc)
                raise
        store.start()
        production.start()
        try:
            yield
        finally:
            await store.stop()
            # Off the event loop: the last write may wait on the lake.
            await asyncio.to_thread(production.close)

    app = FastAPI(
        title="socialads",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.production_log = production
    guard = _key_guard(settings)
    recorder = production if settings.prediction_log else None
    _add_predict_routes(app, store, metrics, guard, settings.batch_max_records, recorder)
    _add_feedback_route(app, production, guard)
    _add_ops_routes(app, store, metrics)
    _add_admin_routes(app, store, guard)
    _add_error_handlers(app)
    _document_request_model(app)
    app.add_middleware(EdgeMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app


_BAD_INPUT: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid input"}
}
_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "No model loaded yet"}
}


def _unauthorized(guard: list[Any]) -> dict[int | str, dict[str, Any]]:
    if not guard:
        return {}
    return {401: {"model": ErrorResponse, "description": "Missing or wrong API key"}}


def _not_ready(store: ModelStore) -> JSONResponse:
    reason = store.last_error or "the first load is in progress"
    return error_body("not_ready", f"no model loaded yet: {reason}", status=503)


_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    }
}
_WHOLE_BODY = "a JSON object with Gender, Age and EstimatedSalary"


def _sent_json(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """True when the Content-Type is JSON (``application/json`` or ``*/*+json``)."""
    for name, value in headers:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return False


def invalid_body(
    body: bytes | None = None,
    *,
    errors: Sequence[Any] = (),
    skip: int = 0,
    json_content_type: bool = True,
) -> JSONResponse:
    """The 400 answer to a request body that is not a valid record.

    ``body`` is the raw body when known; ``errors`` are pydantic's (``skip`` drops
    FastAPI's leading ``"body"`` from their locations); JSON syntax errors become
    ``malformed_json``.
    """
    if not json_content_type:
        reason = f"must be {_WHOLE_BODY} (send it with Content-Type: application/json)"
        return _invalid([FieldError(field="body", reason=reason)])
    if body == b"":
        return _invalid([FieldError(field="body", reason=f"{_WHOLE_BODY} is required")])
    for error in errors:
        if error.get("type") == "json_invalid":
            why = error.get("ctx", {}).get("error") or error.get("msg", "invalid JSON")
            return error_body("malformed_json", f"the request body is not valid JSON: {why}")
    problems = field_problems(errors, skip=skip)
    if len(problems) == 1 and problems[0].field == "body" and problems[0].reason == "is required":
        problems = [FieldError(field="body", reason=f"{_WHOLE_BODY} is required")]
    return _invalid(problems)


def _add_predict_routes(
    app: FastAPI,
    store: ModelStore,
    metrics: ServingMetrics,
    guard: list[Any],
    limit: int,
    recorder: ProductionLog | None,
) -> None:
    count = metrics.count_prediction

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={**_BAD_INPUT, **_unauthorized(guard), **_NOT_READY},
        dependencies=guard,
        tags=["predict"],
        summary="Predict one user",
        openapi_extra=_PREDICT_BODY,
    )
    async def predict(request: Request) -> Response:
        """Whether the user buys (1, COMPRA) or not (0, NO COMPRA), with P(1)."""
        # The body is validated here rather than by a FastAPI body parameter: pydantic-core
        # parses the JSON and the model in one pass (PredictRequest.model_validate_json),
        # which skips json.loads, content negotiation and dependency solving (~20 µs).
        body = await request.body()
        if not _sent_json(request.scope["headers"]):
            return invalid_body(body, json_content_type=False)
        try:
            record = PredictRequest.model_validate_json(body)
        except ValidationError as exc:
            return invalid_body(body, errors=exc.errors(include_url=False))
        model = store.current  # read once: a reload rebinds the attribute, never this object
        if model is None:
            return _not_ready(store)
        prediction, probability = await model.batcher.predict(
            record.gender, record.age, record.salary
        )
        count(prediction)
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        if recorder is not None:
            features = (record.gender, record.age, record.salary)
            recorder.prediction(rid, "api", model.version, features, probability, prediction)
        return JSONBytesResponse(model.render(prediction, probability, rid), rid)

    async def predict_batch(batch: BatchRequest, request: Request) -> Response:
        """Predictions for the valid rows; every invalid row is listed in ``errors``."""
        records = batch.records
        if len(records) > limit:
            return error_body(
                "too_many_records",
                f"a batch holds at most {limit} records (SOCIALADS_BATCH_MAX_RECORDS), "
                f"got {len(records)}",
                status=413,
            )
        model = store.current
        if model is None:
            return _not_ready(store)
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        body = _predict_rows(model, records, metrics, rid, recorder)
        return JSONResponse(body, headers={REQUEST_ID_HEADER: rid})

    # The body model is built per app to document this app's limit; FastAPI reads it from
    # the annotation, which must therefore be the class itself, not a name.
    predict_batch.__annotations__["batch"] = batch_request_model(limit)
    app.post(
        "/predict/batch",
        response_model=BatchResponse,
        responses={
            **_BAD_INPUT,
            **_unauthorized(guard),
            413: {"model": ErrorResponse, "description": "Too many records or body too large"},
            **_NOT_READY,
        },
        dependencies=guard,
        tags=["predict"],
        summary="Predict many users",
    )(predict_batch)


_FEEDBACK_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/FeedbackItem"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/FeedbackItem"}},
                    ]
                }
            }
        },
    }
}


def _add_feedback_route(app: FastAPI, production: ProductionLog, guard: list[Any]) -> None:
    @app.post(
        "/feedback",
        status_code=202,
        response_model=FeedbackResponse,
        responses={
            **_BAD_INPUT,
            **_unauthorized(guard),
            413: {"model": ErrorResponse, "description": "Body too large"},
        },
        dependencies=guard,
        tags=["predict"],
        summary="Record true outcomes",
        openapi_extra=_FEEDBACK_BODY_DOC,
    )
    async def feedback(request: Request) -> Response:
        """Whether the users of earlier predictions bought: one label or a list of them.

        Accepted labels are written to the lake's feedback/ in the background (joinable with
        the prediction log on ``request_id``).
        """
        body = await request.body()
        try:
            data = json.loads(body)
        except ValueError as exc:
            return error_body("malformed_json", f"the request body is not valid JSON: {exc}")
        single = not isinstance(data, list)
        try:
            items = FEEDBACK_BODY.validate_python([data] if single else data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            return _invalid(field_problems(errors, skip=1 if single else 0, shape=LABEL_SHAPE))
        production.labels([(item.request_id, item.purchased) for item in items])
        return JSONResponse({"accepted": len(items)}, status_code=202)


def _add_ops_routes(app: FastAPI, store: ModelStore, metrics: ServingMetrics) -> None:
    @app.get("/health", tags=["ops"], summary="Liveness")
    async def health() -> Response:
        """Always 200 while the process serves HTTP; touches nothing else."""
        return JSONBytesResponse(_HEALTHY)

    @app.get(
        "/ready",
        tags=["ops"],
        summary="Readiness",
        responses={503: {"description": "No model loaded yet"}},
    )
    async def ready() -> JSONResponse:
        """200 once a model is loaded, 503 before (with the reason)."""
        model = store.current
        if model is None:
            reason = store.last_error or "the first load is in progress"
            return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": model.version})

    @app.get("/model", response_model=ModelInfo, responses=_NOT_READY, tags=["ops"])
    async def model_info() -> Response:
        """The served model: registry name, version, alias, run, metrics, engine."""
        model = store.current
        if model is None:
            return _not_ready(store)
        return JSONResponse(model.describe())

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format (summed over workers when several run)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _add_admin_routes(app: FastAPI, store: ModelStore, guard: list[Any]) -> None:
    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        dependencies=guard,
        responses={
            **_BAD_INPUT,
            **_unauthorized(guard),
            500: {"model": ErrorResponse, "description": "The load failed unexpectedly"},
            502: {"model": ErrorResponse, "description": "The registry failed; nothing changed"},
            503: {"model": ErrorResponse, "description": "No champion in the registry"},
        },
        tags=["admin"],
    )
    async def admin_reload(
        force: bool = Query(False, description="Reload even if the version did not change."),
    ) -> JSONResponse:
        """Load the champion now; serve it if its version differs (or with ``force``).

        A failed load changes nothing: the current model keeps serving. With several
        workers only the worker that answers reloads; the others follow at their next poll.
        """
        previous = store.current
        keep = f"; still serving version {previous.version}" if previous else ""
        try:
            result = await store.reload(force=force)
        except NoChampionError as exc:
            return error_body("no_champion", f"{exc}{keep}", status=503)
        except SocialAdsError as exc:
            return error_body("registry_error", f"reload failed: {exc}{keep}", status=502)
        except Exception as exc:  # logged by the store with its traceback
            return error_body(
                "reload_failed", f"reload failed: {type(exc).__name__}: {exc}{keep}", status=500
            )
        detail = (
            f"now serving version {result.version}"
            if result.reloaded
            else f"version {result.version} is already served"
        )
        return JSONResponse(
            {
                "reloaded": result.reloaded,
                "version": result.version,
                "previous_version": result.previous_version,
                "detail": detail,
            }
        )


def _document_request_model(app: FastAPI) -> None:
    """Put PredictRequest in the OpenAPI components (/predict reads its body itself)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PredictRequest, FeedbackItem):
                schemas[model.__name__] = model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _predict_rows(
    model: LoadedModel,
    records: list[Any],
    metrics: ServingMetrics,
    rid: str,
    recorder: ProductionLog | None,
) -> dict[str, Any]:
    """Validate each row on its own, predict the valid ones in one call, log them."""
    indices: list[int] = []
    genders: list[str] = []
    ages: list[float] = []
    salaries: list[float] = []
    errors: list[dict[str, Any]] = []
    for index, row in enumerate(records):
        try:
            record = PredictRequest.model_validate(row)
        except ValidationError as exc:
            for problem in field_problems(exc.errors(), whole="record"):
                errors.append({"index": index, **problem.model_dump()})
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
        "errors": errors,
    }


def _add_error_handlers(app: FastAPI) -> None:
    """Domain and framework errors → the API's error shape (400, never 422)."""

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return invalid_body(errors=exc.errors(), skip=1)

    async def on_invalid_input(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidInputError)
        return _invalid([FieldError(field=exc.field, reason=exc.reason)])

    async def on_no_champion(request: Request, exc: Exception) -> JSONResponse:
        return error_body("not_ready", str(exc), status=503)

    async def on_registry(request: Request, exc: Exception) -> JSONResponse:
        return error_body("registry_error", str(exc), status=502)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        response = error_body(_slug(exc.status_code), str(exc.detail), status=exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InvalidInputError, on_invalid_input)
    app.add_exception_handler(NoChampionError, on_no_champion)
    app.add_exception_handler(RegistryError, on_registry)
    app.add_exception_handler(HTTPException, on_http)


def _slug(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


__all__ = ["EdgeMiddleware", "create_app", "error_body"]
