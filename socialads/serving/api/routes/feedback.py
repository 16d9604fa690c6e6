"""POST /feedback: the true outcomes of earlier predictions."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from socialads.serving.api import errors
from socialads.serving.api.deps import ProductionLogDep
from socialads.serving.schemas import (
    FEEDBACK_BODY,
    LABEL_SHAPE,
    FeedbackResponse,
    feedback_body_schema,
    field_problems,
)

router = APIRouter(tags=["predict"])


@router.post(
    "/feedback",
    status_code=202,
    response_model=FeedbackResponse,
    responses=errors.BAD_INPUT,
    summary="Record true outcomes",
    # The body is read below: a single label is validated as a list of one, so that its
    # errors name the field alone, and any Content-Type is accepted.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": feedback_body_schema()}},
        }
    },
)
async def feedback(request: Request, production: ProductionLogDep) -> JSONResponse:
    """Whether the users of earlier predictions bought: one label or a list of them.

    Accepted labels are written to the lake's feedback/ in the background (joinable with
    the prediction log on ``request_id``).
    """
    body = await request.body()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise errors.malformed_json(str(exc)) from None
    single = not isinstance(data, list)
    try:
        items = FEEDBACK_BODY.validate_python([data] if single else data)
    except ValidationError as exc:
        problems = field_problems(
            exc.errors(include_url=False), skip=1 if single else 0, shape=LABEL_SHAPE
        )
        raise errors.invalid_input(problems) from None
    production.labels([(item.request_id, item.purchased) for item in items])
    return JSONResponse({"accepted": len(items)}, status_code=202)
