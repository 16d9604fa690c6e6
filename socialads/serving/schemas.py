"""Request and response models of the API, built from the data contract in data/schema.py.

The numeric bounds are pydantic constraints (checked in pydantic-core, shown as
``minimum``/``maximum`` in OpenAPI) taken from :data:`socialads.data.schema.BOUNDS`; Gender
goes through :func:`socialads.data.schema.normalise_gender`. Error reasons are the schema's
own messages (see :func:`field_problems`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
)

from socialads.data.production import REQUEST_ID_MAX_LENGTH
from socialads.data.schema import (
    AGE,
    BOUNDS,
    GENDER,
    GENDERS,
    LABELS,
    NUMERIC_FEATURES,
    SALARY,
    check_number,
    normalise_gender,
)

EXAMPLE_RECORD: dict[str, Any] = {GENDER: "Female", AGE: 45, SALARY: 90000}
# Gender's accepted values for OpenAPI clients and generators (JSON Schema regexes have no
# case-insensitive flag); normalise_gender stays the validator.
_GENDER_PATTERN = (
    "^\\s*(" + "|".join("".join(f"[{c.upper()}{c.lower()}]" for c in g) for g in GENDERS) + ")\\s*$"
)


def _number(name: str, description: str, example: float) -> Any:
    bounds = BOUNDS[name]
    return Field(
        alias=name,
        title=name,
        ge=bounds.minimum,
        le=bounds.maximum,
        strict=True,  # no strings, no booleans: check_number's rule
        allow_inf_nan=False,
        description=f"{description}, {bounds.describe()}.",
        examples=[example],
    )


class PredictRequest(BaseModel):
    """One user: Gender, Age and EstimatedSalary (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [EXAMPLE_RECORD]})

    # The alias is the column name declared once in socialads.data.schema; mypy's dataclass
    # check wants a literal there.
    gender: Annotated[str, BeforeValidator(normalise_gender)] = Field(  # type: ignore[literal-required]
        alias=GENDER,
        title=GENDER,
        description=f"One of {', '.join(GENDERS)}, in any letter case, surrounding spaces ignored.",
        examples=["Female"],
        json_schema_extra={"pattern": _GENDER_PATTERN},
    )
    age: float = _number(AGE, "Age", 45)
    salary: float = _number(SALARY, "Estimated yearly salary", 90000)


class PredictResponse(BaseModel):
    """The prediction for one user."""

    prediction: Literal[0, 1] = Field(description="1: buys after seeing the ad, 0: does not.")
    label: Literal["NO COMPRA", "COMPRA"] = Field(description=f"Business label: {LABELS}.")
    probability: float = Field(description="Probability of class 1 (COMPRA), full precision.")
    model_version: str = Field(description="Registered version of the model that answered.")
    request_id: str = Field(
        description="Id of this prediction in the prediction log (the X-Request-ID header "
        "when one was sent, echoed back); send it with POST /feedback."
    )


class BatchResult(BaseModel):
    """The prediction for one valid row of a batch."""

    index: int = Field(description="Position of the row in the request's records.")
    prediction: Literal[0, 1]
    label: Literal["NO COMPRA", "COMPRA"]
    probability: float
    request_id: str = Field(description="`<batch request_id>-<index>`: this row's log id.")


class FieldError(BaseModel):
    """One invalid field."""

    field: str = Field(description="The field (or `body`/`record` for the whole object).")
    reason: str


class RowError(FieldError):
    """One invalid field of one row of a batch."""

    index: int


class BatchResponse(BaseModel):
    """Predictions for the valid rows and the problems of the invalid ones."""

    model_version: str
    request_id: str = Field(description="Id of the batch (X-Request-ID when sent).")
    count: int = Field(description="Rows received.")
    results: list[BatchResult]
    errors: list[RowError] = Field(description="Every problem of every invalid row.")


class FeedbackItem(BaseModel):
    """The true outcome of an earlier prediction."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no "1" for 1, no true for 1

    request_id: str = Field(
        min_length=1,
        max_length=REQUEST_ID_MAX_LENGTH,
        description="The request_id /predict, /predict/batch or `socialads score` returned.",
    )
    # An int, not Literal[0, 1]: a literal would take true for 1.
    purchased: int = Field(ge=0, le=1, description="1: the user bought, 0: not.")


FEEDBACK_BODY: TypeAdapter[list[FeedbackItem]] = TypeAdapter(list[FeedbackItem])
"""POST /feedback's body: one label, or a list of them (a single object is read as a list
of one, so that its errors name the field alone)."""


class FeedbackResponse(BaseModel):
    """Labels accepted for the feedback log (written to the lake in the background)."""

    accepted: int


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: a stable code, a sentence, and for invalid input the fields."""

    error: str = Field(examples=["invalid_input"])
    detail: str = Field(examples=["Age: must be between 18 and 100 years, got 150"])
    field: str | None = Field(default=None, description="The first invalid field.")
    reason: str | None = Field(default=None, description="Why that field is invalid.")
    errors: list[FieldError] | None = None


class NotReadyResponse(ErrorResponse):
    """Every "no model yet" answer (503): /ready, /predict, /predict/batch, /model."""

    error: Literal["not_ready"] = "not_ready"
    detail: str = Field(examples=["no model loaded yet: the first load is in progress"])
    status: Literal["not_ready"] = Field(default="not_ready", description="As GET /ready says.")
    reason: str = Field(description="Why no model is served yet (the last load's error).")


class ModelInfo(BaseModel):
    """The model being served."""

    name: str
    version: str
    alias: str
    run_id: str | None
    metrics: dict[str, float]
    loaded_at: str = Field(description="UTC time the version was loaded, ISO 8601.")
    engine: str = Field(
        description="`onnxruntime` (the version's ONNX graph) or `sklearn` (Pipeline fallback)."
    )
    engine_reason: str | None = Field(
        default=None, description="Why the scikit-learn fallback serves this version."
    )
    estimator: str = Field(description="The estimator's class, e.g. `LogisticRegression`.")


class ReloadResponse(BaseModel):
    """Outcome of POST /admin/reload."""

    reloaded: bool
    version: str
    previous_version: str | None
    detail: str


def _as_sent(value: Any) -> Any:
    return value


BatchRow = Annotated[Any, PlainValidator(_as_sent, json_schema_input_type=PredictRequest)]
"""A row of a batch: documented as a PredictRequest, kept as sent. The route validates each
row on its own, so that an invalid row does not reject the whole batch."""


class BatchRequest(BaseModel):
    """A batch of records; each is validated on its own."""

    records: list[BatchRow] = Field(
        description="Records shaped like PredictRequest, at most SOCIALADS_BATCH_MAX_RECORDS "
        "(this service's figure is in the 413 answer); invalid rows are reported in `errors`, "
        "the valid ones still get predictions."
    )


class ReadyResponse(BaseModel):
    """GET /ready once a model is loaded."""

    status: Literal["ready"]
    model_version: str


def feedback_body_schema() -> dict[str, Any]:
    """POST /feedback's body in OpenAPI: one FeedbackItem or a list of them (self-contained)."""
    item = FeedbackItem.model_json_schema()
    return {"oneOf": [item, {"type": "array", "items": item}]}


RECORD_SHAPE = "a JSON object with Gender, Age and EstimatedSalary"
LABEL_SHAPE = "a JSON object with request_id and purchased"


def _reason(field: str, error: Mapping[str, Any], shape: str = RECORD_SHAPE) -> str:
    kind = error.get("type", "")
    if kind == "missing":
        return "is required"
    if field in NUMERIC_FEATURES:
        try:
            check_number(field, error.get("input"))
        except (ValueError, OverflowError) as exc:  # the schema's wording, bounds included
            return str(exc)
    if kind == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return f"must be {shape}"
    return str(error.get("msg", "is invalid"))


def field_problems(
    errors: Iterable[Mapping[str, Any]],
    *,
    skip: int = 0,
    whole: str = "body",
    shape: str = RECORD_SHAPE,
) -> list[FieldError]:
    """Translate pydantic errors into (field, reason) pairs, one per problem.

    ``skip`` drops leading ``loc`` parts (FastAPI's ``"body"``); an error about the whole
    object is named ``whole``.
    """
    problems: list[FieldError] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))[skip:]
        field = ".".join(str(part) for part in loc) if loc else whole
        problems.append(FieldError(field=field, reason=_reason(field, error, shape)))
    return problems
