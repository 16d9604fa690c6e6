"""Errors → HTTP: the API's one error body, and the exception handlers that produce it.

Routes and dependencies raise; nothing here is on the success path. Domain exceptions
(:mod:`socialads.errors`) keep their meaning: invalid input → 400, no model yet → 503 (one
body for every "not ready", :class:`~socialads.serving.schemas.NotReadyResponse`), a failing
registry → 502. Request validation never answers 422: it is the 400 of invalid input.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from socialads.errors import InvalidInputError, ModelNotReadyError, NoChampionError, RegistryError
from socialads.serving.schemas import (
    RECORD_SHAPE,
    ErrorResponse,
    FieldError,
    NotReadyResponse,
    field_problems,
)


class ApiError(Exception):
    """An error answer of the API: HTTP status, stable code, one sentence, invalid fields."""

    def __init__(
        self, status: int, error: str, detail: str, problems: Sequence[FieldError] = ()
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.problems = problems

    def response(self) -> JSONResponse:
        """The :class:`~socialads.serving.schemas.ErrorResponse` body of this error."""
        return error_response(self.status, self.error, self.detail, self.problems)


def error_response(
    status: int, error: str, detail: str, problems: Sequence[FieldError] = ()
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


def not_ready_response(reason: str) -> JSONResponse:
    """The 503 of every route that needs a model, before one is loaded."""
    body = NotReadyResponse(detail=f"no model loaded yet: {reason}", reason=reason)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=503)


def invalid_input(problems: Sequence[FieldError]) -> ApiError:
    """400 ``invalid_input`` naming every invalid field."""
    detail = "; ".join(f"{p.field}: {p.reason}" for p in problems)
    return ApiError(400, "invalid_input", detail, problems)


def malformed_json(why: str) -> ApiError:
    """400 ``malformed_json``."""
    return ApiError(400, "malformed_json", f"the request body is not valid JSON: {why}")


def invalid_body(
    body: bytes | None = None,
    *,
    errors: Sequence[Any] = (),
    skip: int = 0,
    json_content_type: bool = True,
) -> ApiError:
    """The 400 for a request body that is not a valid record.

    ``body`` is the raw body when known; ``errors`` are pydantic's (``skip`` drops
    FastAPI's leading ``"body"`` from their locations); JSON syntax errors become
    ``malformed_json``.
    """
    if not json_content_type:
        reason = f"must be {RECORD_SHAPE} (send it with Content-Type: application/json)"
        return invalid_input([FieldError(field="body", reason=reason)])
    if body == b"":
        return invalid_input([FieldError(field="body", reason=f"{RECORD_SHAPE} is required")])
    for error in errors:
        if error.get("type") == "json_invalid":
            why = error.get("ctx", {}).get("error") or error.get("msg", "invalid JSON")
            return malformed_json(why)
    problems = field_problems(errors, skip=skip)
    if len(problems) == 1 and problems[0].field == "body" and problems[0].reason == "is required":
        problems = [FieldError(field="body", reason=f"{RECORD_SHAPE} is required")]
    return invalid_input(problems)


def too_many_records(limit: int, got: int) -> ApiError:
    """413 for a batch over SOCIALADS_BATCH_MAX_RECORDS."""
    detail = f"a batch holds at most {limit} records (SOCIALADS_BATCH_MAX_RECORDS), got {got}"
    return ApiError(413, "too_many_records", detail)


def payload_too_large(limit: int) -> ApiError:
    """413 for a body over SOCIALADS_MAX_BODY_BYTES."""
    detail = f"the request body exceeds {limit} bytes (SOCIALADS_MAX_BODY_BYTES)"
    return ApiError(413, "payload_too_large", detail)


def _slug(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


# -- documented responses --------------------------------------------------------------------
def documented(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry: an :class:`ErrorResponse` body under ``status``."""
    return {status: {"model": ErrorResponse, "description": description}}


BAD_INPUT = documented(400, "Invalid input")
UNAUTHORIZED = documented(401, "Missing or wrong API key")
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": NotReadyResponse, "description": "No model loaded yet"}
}


# -- handlers --------------------------------------------------------------------------------
async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return invalid_body(errors=exc.errors(), skip=1).response()


async def _on_invalid_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInputError)
    return invalid_input([FieldError(field=exc.field, reason=exc.reason)]).response()


async def _on_not_ready(request: Request, exc: Exception) -> JSONResponse:
    reason = exc.reason if isinstance(exc, ModelNotReadyError) else str(exc)
    return not_ready_response(reason)


async def _on_registry(request: Request, exc: Exception) -> JSONResponse:
    return error_response(502, "registry_error", str(exc))


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, _slug(exc.status_code), str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def add_exception_handlers(app: FastAPI) -> None:
    """Translate the API's, the domain's and the framework's exceptions into error bodies."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(InvalidInputError, _on_invalid_input)
    app.add_exception_handler(ModelNotReadyError, _on_not_ready)
    app.add_exception_handler(NoChampionError, _on_not_ready)
    app.add_exception_handler(RegistryError, _on_registry)
    app.add_exception_handler(HTTPException, _on_http)
