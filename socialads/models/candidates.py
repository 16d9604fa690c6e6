"""Candidate model families and their small hyperparameter grids.

Their names are declared once, as ``socialads.settings.CandidateName``; a test checks that
every declared name has its family here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from socialads.features.preprocessing import MODEL_STEP

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

    from socialads.settings import CandidateName


@dataclass(frozen=True)
class Candidate:
    """A model family: how to build its estimator and which grid to search."""

    name: CandidateName
    factory: Callable[[int], BaseEstimator]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    superlinear: bool = False
    """Its fit or prediction cost grows faster than the rows (kernel SVM: quadratic or worse;
    KNN: every prediction searches the training rows): searched and fitted on a subsample
    above ``Settings.search_max_rows``."""

    def pipeline_grid(self) -> dict[str, list[Any]]:
        """The grid with keys addressed to the Pipeline's estimator step."""
        return {f"{MODEL_STEP}__{key}": values for key, values in self.grid.items()}


def _logistic_regression(seed: int) -> BaseEstimator:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, random_state=seed)


def _gaussian_nb(seed: int) -> BaseEstimator:
    from sklearn.naive_bayes import GaussianNB

    return GaussianNB()


def _knn(seed: int) -> BaseEstimator:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier()


def _svm_rbf(seed: int) -> BaseEstimator:
    from sklearn.svm import SVC

    return SVC(kernel="rbf", probability=True, random_state=seed)


def _random_forest(seed: int) -> BaseEstimator:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(random_state=seed)


def _gradient_boosting(seed: int) -> BaseEstimator:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(random_state=seed)


CANDIDATES: dict[CandidateName, Candidate] = {
    c.name: c
    for c in (
        Candidate("logistic_regression", _logistic_regression, {"C": [0.01, 0.1, 1.0, 10.0]}),
        Candidate("gaussian_nb", _gaussian_nb, {"var_smoothing": [1e-9, 1e-6, 1e-3]}),
        Candidate(
            "knn",
            _knn,
            {"n_neighbors": [3, 5, 7, 11, 15], "weights": ["uniform", "distance"]},
            superlinear=True,
        ),
        Candidate(
            "svm_rbf",
            _svm_rbf,
            {"C": [0.5, 1.0, 5.0, 10.0], "gamma": ["scale", 0.1, 1.0]},
            superlinear=True,
        ),
        Candidate(
            "random_forest",
            _random_forest,
            {"n_estimators": [100], "max_depth": [3, 5, None], "min_samples_leaf": [1, 3]},
        ),
        Candidate(
            "gradient_boosting",
            _gradient_boosting,
            {"n_estimators": [50, 100], "max_depth": [2, 3], "learning_rate": [0.05, 0.1]},
        ),
    )
}
