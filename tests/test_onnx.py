"""ONNX export and the serving engines: ONNX Runtime agrees with scikit-learn, KNN falls back.

Each family is fitted with its default hyperparameters and with the grid's extremes (deep
forests, many boosting rounds) on the bundled dataset; the agreement is measured on random
records within the declared bounds, drawn independently of the training-time probe grid.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from socialads.data.schema import AGE, BOUNDS, FEATURES, GENDERS, SALARY, TARGET
from socialads.features.preprocessing import build_pipeline, split
from socialads.models import onnx_export
from socialads.models.candidates import CANDIDATES
from socialads.serving.engine import OnnxEngine, SklearnEngine, build_engine

CONVERTIBLE = (
    "logistic_regression",
    "gaussian_nb",
    "svm_rbf",
    "random_forest",
    "gradient_boosting",
)
SETTINGS: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{}, {"C": 0.01}],
    "gaussian_nb": [{}, {"var_smoothing": 1e-3}],
    "svm_rbf": [{}, {"C": 10.0, "gamma": 1.0}],
    "random_forest": [{}, {"max_depth": 3, "min_samples_leaf": 3}],
    "gradient_boosting": [{}, {"n_estimators": 50, "max_depth": 2, "learning_rate": 0.05}],
    "knn": [{}],
}


@pytest.fixture(scope="module")
def splits(raw_bytes: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split(pd.read_csv(io.BytesIO(raw_bytes)), 0.2, 42)


def fitted(family: str, params: dict[str, Any], train: pd.DataFrame) -> Any:
    pipeline = build_pipeline(CANDIDATES[family].factory(42))
    pipeline.set_params(**{f"model__{k}": v for k, v in params.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipeline.fit(train[list(FEATURES)], train[TARGET])


def random_records(n: int, seed: int) -> pd.DataFrame:
    """Uniform records within the bounds, half of them on whole years and thousands."""
    rng = np.random.default_rng(seed)
    age, salary = BOUNDS[AGE], BOUNDS[SALARY]
    ages = rng.uniform(age.minimum, age.maximum, n)
    salaries = rng.uniform(salary.minimum, salary.maximum, n)
    ages[: n // 2] = np.round(ages[: n // 2])
    salaries[: n // 2] = np.round(salaries[: n // 2] / 1000) * 1000
    genders = np.asarray(GENDERS, dtype=object)[rng.integers(0, 2, n)]
    return pd.DataFrame({"Gender": genders, AGE: ages, SALARY: salaries}, columns=list(FEATURES))


@pytest.mark.parametrize(
    ("family", "params"),
    [(family, params) for family in CONVERTIBLE for params in SETTINGS[family]],
)
def test_onnx_runtime_agrees_with_scikit_learn(
    splits: tuple[pd.DataFrame, pd.DataFrame], family: str, params: dict[str, Any]
) -> None:
    train, test = splits
    pipeline = fitted(family, params, train)
    exported = onnx_export.export(pipeline, test)
    assert exported.reason is None and exported.model is not None
    assert exported.check is not None and exported.check.passed
    assert exported.metrics()["onnx_ok"] == 1.0

    records = random_records(3000, seed=7)
    expected = pipeline.predict_proba(records)
    engine = OnnxEngine(exported.model)
    classes, p1 = engine.predict_many(
        list(records["Gender"]), records[AGE].tolist(), records[SALARY].tolist()
    )
    assert np.max(np.abs(p1 - expected[:, 1])) <= onnx_export.TOLERANCE
    assert np.array_equal(classes, (expected[:, 1] > expected[:, 0]).astype(np.int64))
    for i in range(0, len(records), 300):  # the one-record path agrees too
        row = records.iloc[i]
        one_class, one_p1 = engine.predict_one(row["Gender"], row[AGE], row[SALARY])
        assert one_class == classes[i]
        assert abs(one_p1 - expected[i, 1]) <= onnx_export.TOLERANCE
    assert engine.estimator == type(pipeline.steps[-1][1]).__name__


def test_knn_is_not_exported_and_is_served_by_its_pipeline(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, test = splits
    pipeline = fitted("knn", {}, train)
    exported = onnx_export.export(pipeline, test)
    assert exported.model is None
    assert exported.check is not None and exported.check.label_flips > 0
    assert exported.reason is not None and "label flips" in exported.reason
    assert exported.metrics()["onnx_ok"] == 0.0

    engine = build_engine(exported.model, lambda: pipeline, exported.reason)
    assert isinstance(engine, SklearnEngine)
    assert (engine.name, engine.reason) == ("sklearn", exported.reason)
    records = random_records(200, seed=11)
    expected = pipeline.predict_proba(records)[:, 1]
    classes, p1 = engine.predict_many(
        list(records["Gender"]), records[AGE].tolist(), records[SALARY].tolist()
    )
    assert np.array_equal(p1, expected)
    assert np.array_equal(classes, (expected > 0.5).astype(np.int64))


def test_a_graph_onnx_runtime_refuses_falls_back_to_the_pipeline(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    pipeline = fitted("gaussian_nb", {}, splits[0])
    engine = build_engine(b"not an onnx graph", lambda: pipeline, None)
    assert engine.name == "sklearn"
    assert engine.reason is not None and "ONNX Runtime refused the graph" in engine.reason


def test_an_unconvertible_model_gives_a_reason_not_an_error() -> None:
    from sklearn.pipeline import Pipeline

    exported = onnx_export.export(Pipeline([("model", object())]), pd.DataFrame())  # type: ignore[list-item]
    assert exported.model is None
    assert exported.reason is not None and exported.reason.startswith("ONNX conversion failed")


def test_probe_grid_spans_the_declared_bounds() -> None:
    grid = onnx_export.probe_grid()
    for column in (AGE, SALARY):
        bounds = BOUNDS[column]
        assert grid[column].min() == bounds.minimum
        assert grid[column].max() == bounds.maximum
        assert grid[column].between(bounds.minimum, bounds.maximum).all()
    assert set(grid["Gender"]) == set(GENDERS)


class CountingEngine:
    """Wraps an engine and counts its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0
        self.name, self.reason, self.estimator = inner.name, inner.reason, inner.estimator

    def predict_one(self, gender: str, age: float, salary: float) -> tuple[int, float]:
        self.calls += 1
        return self.inner.predict_one(gender, age, salary)  # type: ignore[no-any-return]

    def predict_many(self, genders: Any, ages: Any, salaries: Any) -> Any:
        self.calls += 1
        return self.inner.predict_many(genders, ages, salaries)


def test_concurrent_requests_share_one_engine_call_and_each_gets_its_own_answer(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    import asyncio

    from socialads.serving.engine import MicroBatcher

    pipeline = fitted("gaussian_nb", {}, splits[0])
    engine = CountingEngine(OnnxEngine(onnx_export.convert(pipeline)))
    batcher = MicroBatcher(engine)
    records = random_records(50, seed=3)
    rows = list(zip(records["Gender"], records[AGE], records[SALARY], strict=True))

    async def together() -> list[tuple[int, float]]:
        return await asyncio.gather(*(batcher.predict(g, a, s) for g, a, s in rows))

    answers = asyncio.run(together())
    assert engine.calls == 1
    expected = pipeline.predict_proba(records)
    for (prediction, probability), p in zip(answers, expected, strict=True):
        assert abs(probability - p[1]) <= onnx_export.TOLERANCE
        assert prediction == int(p[1] > p[0])

    async def alone() -> tuple[int, float]:
        return await batcher.predict(*rows[0])

    assert asyncio.run(alone()) == engine.inner.predict_one(*rows[0])


def test_an_engine_failure_reaches_every_waiting_request() -> None:
    import asyncio

    from socialads.serving.engine import MicroBatcher

    class Broken:
        name, reason, estimator = "broken", None, "none"

        def predict_many(self, genders: Any, ages: Any, salaries: Any) -> Any:
            raise RuntimeError("engine down")

    batcher = MicroBatcher(Broken())  # type: ignore[arg-type]

    async def together() -> list[Any]:
        return await asyncio.gather(
            *(batcher.predict("Male", 30.0, 50_000.0) for _ in range(3)), return_exceptions=True
        )

    outcomes = asyncio.run(together())
    assert [str(o) for o in outcomes] == ["engine down"] * 3
