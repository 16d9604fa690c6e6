"""One prediction from the command line, through the same loading code as the API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from socialads.data.schema import AGE, GENDER, SALARY, check_number, label_for, normalise_gender
from socialads.errors import InvalidInputError

if TYPE_CHECKING:
    from socialads.settings import Settings


def validate_record(gender: Any, age: Any, salary: Any) -> tuple[str, float, float]:
    """Check one record against the schema; raises InvalidInputError naming the field."""
    checked: list[Any] = []
    for field, value, check in (
        (GENDER, gender, normalise_gender),
        (AGE, age, lambda v: check_number(AGE, v)),
        (SALARY, salary, lambda v: check_number(SALARY, v)),
    ):
        try:
            checked.append(check(value))
        except ValueError as exc:
            raise InvalidInputError(field, str(exc)) from exc
    return checked[0], checked[1], checked[2]


def predict_one(settings: Settings, *, gender: Any, age: Any, salary: Any) -> dict[str, Any]:
    """Validate, find the champion and predict one record.

    The registry is asked which version is champion on every call; its compiled form comes
    from the local cache when present, else from MLflow (and is cached for the next call).
    """
    from socialads.serving import cache

    record = validate_record(gender, age, salary)
    version = cache.champion_version_quick(settings)
    predictor = cache.load_cached(settings, version) if version else None
    if predictor is None:
        from socialads.models.registry import load_champion
        from socialads.serving.fastpath import compile_pipeline

        champion = load_champion(settings)
        version = champion.version
        predictor = compile_pipeline(champion.pipeline)
        cache.store(settings, version, predictor)
    prediction, probability = predictor.predict_one(*record)
    return {
        "prediction": prediction,
        "label": label_for(prediction),
        "probability": round(probability, 6),
        "model_version": str(version),
    }
