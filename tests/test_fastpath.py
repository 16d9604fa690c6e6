"""The compiled serving predictors reproduce ``pipeline.predict_proba`` for every family."""

from __future__ import annotations

import warnings
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import pytest

from socialads.data.schema import AGE, FEATURES, GENDER, SALARY, TARGET, USER_ID
from socialads.features.preprocessing import build_pipeline
from socialads.models.candidates import CANDIDATES
from socialads.serving.fastpath import FastPredictor, GenericPredictor, compile_pipeline

ATOL = 1e-9
SEED = 0
N_RANDOM = 2500


def _estimator(name: str) -> Any:
    """The candidate factories, plus a few non-default hyperparameters."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    extra: dict[str, Any] = {
        "knn_distance": lambda: KNeighborsClassifier(weights="distance"),
        "knn_ball_tree_7": lambda: KNeighborsClassifier(n_neighbors=7, algorithm="ball_tree"),
        "svm_gamma_1": lambda: SVC(kernel="rbf", probability=True, gamma=1.0, random_state=SEED),
        "random_forest_deep": lambda: RandomForestClassifier(
            n_estimators=50, max_depth=None, random_state=SEED
        ),
        "gradient_boosting_depth_3": lambda: GradientBoostingClassifier(
            n_estimators=50, max_depth=3, random_state=SEED
        ),
    }
    return extra[name]() if name in extra else CANDIDATES[name].factory(SEED)


CASES: dict[str, str] = {
    "logistic_regression": "logistic_regression",
    "gaussian_nb": "gaussian_nb",
    "knn": "knn",
    "knn_distance": "knn",
    "knn_ball_tree_7": "knn",
    "svm_rbf": "svm_rbf",
    "svm_gamma_1": "svm_rbf",
    "random_forest": "random_forest",
    "random_forest_deep": "random_forest",
    "gradient_boosting": "gradient_boosting",
    "gradient_boosting_depth_3": "gradient_boosting",
}


@pytest.fixture(scope="module")
def dataset() -> pd.DataFrame:
    source = resources.files("socialads.data").joinpath("Social_Network_Ads.csv")
    with resources.as_file(source) as path:
        return pd.read_csv(path).drop(columns=[USER_ID])


@pytest.fixture(scope="module")
def probes(dataset: pd.DataFrame) -> pd.DataFrame:
    """Random valid records plus every training row."""
    rng = np.random.default_rng(7)
    random = pd.DataFrame(
        {
            GENDER: rng.choice(["Female", "Male"], N_RANDOM),
            AGE: rng.uniform(18, 100, N_RANDOM),
            SALARY: rng.uniform(0, 1_000_000, N_RANDOM),
        }
    )
    train = dataset[list(FEATURES)].astype({AGE: float, SALARY: float})
    return pd.concat([random, train], ignore_index=True)


@pytest.fixture(scope="module")
def fitted(dataset: pd.DataFrame) -> dict[str, Any]:
    """Every pipeline, fitted once per module."""
    x, y = dataset[list(FEATURES)], dataset[TARGET]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # SVC(probability=True) in sklearn 1.9
        return {name: build_pipeline(_estimator(name)).fit(x, y) for name in CASES}


def _columns(frame: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    return frame[GENDER].tolist(), frame[AGE].to_numpy(), frame[SALARY].to_numpy()


def _assert_reproduces(
    predictor: FastPredictor, pipeline: Any, frame: pd.DataFrame, rows_one: int | None = None
) -> None:
    """Probabilities within ATOL (many and one) and classes by argmax, ties → 0."""
    expected = pipeline.predict_proba(frame)
    genders, ages, salaries = _columns(frame)

    many = predictor.predict_proba_many(genders, ages, salaries)
    assert many.shape == (len(frame),)
    np.testing.assert_allclose(many, expected[:, 1], rtol=0, atol=ATOL)

    n_one = len(frame) if rows_one is None else rows_one
    records = list(zip(genders, ages.tolist(), salaries.tolist(), strict=True))[:n_one]
    one = np.array([predictor.predict_proba_one(g, a, s) for g, a, s in records])
    np.testing.assert_allclose(one, expected[:n_one, 1], rtol=0, atol=ATOL)

    # The contract: class = argmax of predict_proba, ties go to class 0. Only a gap
    # below float rounding (never an exact tie) may legitimately flip.
    rule = (expected[:, 1] > expected[:, 0]).astype(int)
    gap = np.abs(expected[:, 1] - expected[:, 0])
    decided = (gap > 1e-12) | (gap == 0)
    classes_many, proba_many = predictor.predict_many(genders, ages, salaries)
    np.testing.assert_array_equal(classes_many[decided], rule[decided])
    np.testing.assert_array_equal(proba_many, many)
    classes_one = np.array([predictor.predict_one(g, a, s)[0] for g, a, s in records])
    np.testing.assert_array_equal(classes_one[decided[:n_one]], rule[:n_one][decided[:n_one]])


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_matches_pipeline(name: str, fitted: dict[str, Any], probes: pd.DataFrame) -> None:
    pipeline = fitted[name]
    predictor = compile_pipeline(pipeline)
    assert not isinstance(predictor, GenericPredictor), getattr(predictor, "reason", "")
    assert predictor.family == CASES[name]
    _assert_reproduces(predictor, pipeline, probes)


@pytest.mark.parametrize("name", ["random_forest", "gradient_boosting_depth_3"])
def test_tree_walk_mode_matches_pipeline(
    name: str, fitted: dict[str, Any], probes: pd.DataFrame
) -> None:
    """A threshold grid over the limit falls back to walking the trees, still exact."""
    predictor = compile_pipeline(fitted[name], max_grid_cells=0)
    assert getattr(predictor, "mode", None) == "walk"
    _assert_reproduces(predictor, fitted[name], probes, rows_one=800)


def test_tree_grid_mode_is_used_by_default(fitted: dict[str, Any]) -> None:
    assert getattr(compile_pipeline(fitted["random_forest"]), "mode", None) == "grid"


def test_svc_probabilities_follow_libsvm_not_the_plain_sigmoid(fitted: dict[str, Any]) -> None:
    """sklearn's libsvm runs its iterative pairwise solver even for two classes."""
    pipeline = fitted["svm_rbf"]
    model = pipeline.named_steps["model"]
    frame = pd.DataFrame({GENDER: ["Male"] * 200, AGE: np.linspace(18, 60, 200), SALARY: 80_000.0})
    expected = pipeline.predict_proba(frame)[:, 1]
    decision = model.decision_function(pipeline.named_steps["preprocess"].transform(frame))
    # Platt: P(class 0) = 1 / (1 + exp(A*f + B)) with f libsvm's (negated) decision value.
    sigmoid = 1.0 - 1.0 / (1.0 + np.exp(-model._probA[0] * decision + model._probB[0]))
    assert np.max(np.abs(sigmoid - expected)) > 1e-6  # the naive formula is not enough
    got = compile_pipeline(pipeline).predict_proba_many(*_columns(frame))
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def _unsupported_pipelines(dataset: pd.DataFrame) -> dict[str, Any]:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    x, y = dataset[list(FEATURES)], dataset[TARGET]
    tree = build_pipeline(DecisionTreeClassifier(random_state=SEED)).fit(x, y)
    base = build_pipeline(CANDIDATES["logistic_regression"].factory(SEED))
    extra_step = Pipeline(
        [
            ("preprocess", base.steps[0][1]),
            ("rescale", StandardScaler()),
            ("model", CANDIDATES["logistic_regression"].factory(SEED)),
        ]
    ).fit(x, y)
    return {"decision_tree": tree, "extra_step": extra_step}


@pytest.mark.parametrize("name", ["decision_tree", "extra_step"])
def test_unsupported_pipeline_falls_back_to_generic(
    name: str, dataset: pd.DataFrame, probes: pd.DataFrame
) -> None:
    pipeline = _unsupported_pipelines(dataset)[name]
    predictor = compile_pipeline(pipeline)
    assert isinstance(predictor, GenericPredictor)
    assert predictor.family == "generic"
    assert predictor.reason
    _assert_reproduces(predictor, pipeline, probes.iloc[::10], rows_one=40)


@pytest.mark.parametrize("name", ["logistic_regression", "knn", "svm_rbf", "random_forest"])
def test_invalid_inputs_raise_value_error(name: str, fitted: dict[str, Any]) -> None:
    predictor = compile_pipeline(fitted[name])
    for bad in [("male", 30.0, 50_000.0), ("Male", float("nan"), 50_000.0)]:
        with pytest.raises(ValueError):
            predictor.predict_proba_one(*bad)
    with pytest.raises(ValueError):
        predictor.predict_proba_many(["Female", "Other"], [30.0, 40.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        predictor.predict_proba_many(["Female"], [30.0, 40.0], [1.0, 2.0])


def test_empty_batch(fitted: dict[str, Any]) -> None:
    for name in ("logistic_regression", "knn_distance", "svm_rbf", "gradient_boosting"):
        classes, proba = compile_pipeline(fitted[name]).predict_many([], [], [])
        assert classes.shape == proba.shape == (0,)


def test_brute_force_knn_is_not_compiled(dataset: pd.DataFrame) -> None:
    """Brute-force KNN breaks exact ties differently per batch, so it stays generic."""
    from sklearn.neighbors import KNeighborsClassifier

    x, y = dataset[list(FEATURES)], dataset[TARGET]
    pipeline = build_pipeline(KNeighborsClassifier(algorithm="brute")).fit(x, y)
    predictor = compile_pipeline(pipeline)
    assert isinstance(predictor, GenericPredictor)
    assert "brute" in predictor.reason


def test_failed_self_check_falls_back_to_generic(
    fitted: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiled predictor that disagrees with the Pipeline is never returned."""
    from socialads.serving import fastpath

    original = fastpath._LogisticPredictor.predict_pair_many

    def skewed(self: Any, *args: Any) -> tuple[np.ndarray, np.ndarray]:
        p0, p1 = original(self, *args)
        return p0 - 1e-6, p1 + 1e-6

    monkeypatch.setattr(fastpath._LogisticPredictor, "predict_pair_many", skewed)
    predictor = compile_pipeline(fitted["logistic_regression"])
    assert isinstance(predictor, GenericPredictor)
    assert "differs" in predictor.reason


def test_unfitted_pipeline_is_an_error() -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        compile_pipeline(build_pipeline(CANDIDATES["logistic_regression"].factory(SEED)))


def test_compiled_predictors_survive_a_plain_number_round_trip(
    fitted: dict[str, Any], probes: pd.DataFrame
) -> None:
    """The predict cache stores compiled predictors as JSON + arrays, without pickle."""
    import json

    from socialads.serving.fastpath import predictor_from_state, predictor_state

    stored = 0
    for pipeline in fitted.values():
        predictor = compile_pipeline(pipeline)
        try:
            state, arrays = predictor_state(predictor)
        except NotImplementedError:
            assert (
                predictor.family in ("knn", "generic") or getattr(predictor, "mode", "") == "walk"
            )
            continue
        restored = predictor_from_state(json.loads(json.dumps(state)), dict(arrays))
        genders, ages, salaries = (probes[c].to_numpy() for c in FEATURES)
        np.testing.assert_array_equal(
            restored.predict_proba_many(genders, ages, salaries),
            predictor.predict_proba_many(genders, ages, salaries),
        )
        assert restored.predict_one("Female", 45, 90000) == predictor.predict_one(
            "Female", 45, 90000
        )
        stored += 1
    assert stored >= 5
