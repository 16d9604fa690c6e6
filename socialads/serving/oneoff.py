"""One prediction from the command line, with the champion's ONNX graph when it has one.

The fast path imports neither MLflow nor scikit-learn: the registry names the champion (see
:func:`socialads.serving.cache.champion_version_quick`) and its ONNX graph comes from the
local cache (filled when training registers a champion, or by the first call). Otherwise
MLflow's client is asked, and what it answers is cached for the next call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from socialads.data.schema import AGE, GENDER, SALARY, check_number, label_for, normalise_gender
from socialads.errors import InvalidInputError, NoChampionError

if TYPE_CHECKING:
    from socialads.serving.engine import Engine
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
    """Validate, find the champion and predict one record."""
    from socialads.serving import cache
    from socialads.serving.engine import OnnxEngine

    record = validate_record(gender, age, salary)
    version = cache.champion_version_quick(settings)
    model = cache.load_onnx(settings, version) if version else None
    engine: Engine
    if version is not None and model is not None:
        engine = OnnxEngine(model, settings.onnx_threads)
    else:
        version, engine = champion_from_registry(settings)
    prediction, probability = engine.predict_one(*record)
    return {
        "prediction": prediction,
        "label": label_for(prediction),
        "probability": round(probability, 6),
        "model_version": str(version),
    }


def champion_from_registry(settings: Settings) -> tuple[str, Engine]:
    """The champion's version and engine, as MLflow names it now (and cached for next time).

    Raises :class:`NoChampionError` when there is no champion.
    """
    from socialads.models.registry import load_version
    from socialads.models.tracking import connect
    from socialads.serving.engine import build_engine

    version, model, reason = refresh_cache(settings)
    engine = build_engine(
        model,
        lambda: load_version(connect(settings), settings, version),
        reason,
        settings.onnx_threads,
    )
    return version, engine


def refresh_cache(
    settings: Settings, known: dict[str, bytes] | None = None
) -> tuple[str, bytes | None, str | None]:
    """Ask MLflow which version is champion; cache its ONNX graph and that answer.

    ``known`` maps versions to ONNX graphs the caller already has (training passes the one
    it registered). Returns (version, ONNX graph or None, why there is none).
    """
    from socialads.models.registry import champion_version, load_onnx
    from socialads.models.tracking import connect
    from socialads.serving import cache

    client = connect(settings)
    identity = cache.store_identity(settings)  # before the read: a later write invalidates it
    current = champion_version(client, settings)
    if current is None:
        raise NoChampionError.of(settings.champion_alias, settings.model_name, settings.mlflow_uri)
    version = str(current.version)
    model = (known or {}).get(version) or cache.load_onnx(settings, version)
    reason = None
    if model is None:
        model, reason = load_onnx(client, settings, version)
    if model is not None:
        cache.store_onnx(settings, version, model)
    cache.remember_champion(settings, version, identity)
    return version, model, reason
