"""Cross-validated hyperparameter search of one candidate and its holdout evaluation."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from socialads.data.schema import TARGET
from socialads.features.preprocessing import MODEL_STEP, build_pipeline, features_and_target

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from socialads.models.candidates import Candidate
    from socialads.models.onnx_export import OnnxExport


@dataclass
class CandidateResult:
    """What the search found for one candidate family."""

    name: str
    pipeline: Pipeline
    best_params: dict[str, Any]
    cv_score: float
    cv_std: float
    holdout: dict[str, float]
    fit_seconds: float
    confusion: list[list[int]] = field(default_factory=list)
    cv_fold_scores: list[float] = field(default_factory=list)
    """The best parameters' score on each CV fold."""
    onnx: OnnxExport | None = None
    """The Pipeline's checked ONNX graph (or why there is none); set by training."""
    rows: int = 0
    """Training rows the search and the final fit used."""
    rows_available: int = 0
    """Rows of the training split (more than :attr:`rows` when subsampled)."""

    @property
    def subsampled(self) -> bool:
        """True when the search ran on a subsample of the training split."""
        return self.rows < self.rows_available

    def score(self, metric: str) -> float:
        """Holdout value of ``metric``."""
        return self.holdout[metric]


def evaluate(pipeline: Pipeline, test: pd.DataFrame) -> tuple[dict[str, float], list[list[int]]]:
    """Holdout metrics (accuracy, precision, recall, F1, ROC AUC) and confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    x_test, y_test = features_and_target(test)
    predicted = pipeline.predict(x_test)
    proba = pipeline.predict_proba(x_test)[:, 1]
    metrics = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "precision": float(precision_score(y_test, predicted, zero_division=0)),
        "recall": float(recall_score(y_test, predicted, zero_division=0)),
        "f1": float(f1_score(y_test, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_test, proba)),
    }
    matrix = confusion_matrix(y_test, predicted, labels=[0, 1]).tolist()
    return metrics, matrix


def search_candidate(
    candidate: Candidate,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    metric: str,
    cv_folds: int,
    random_state: int,
    n_jobs: int = 1,
    max_rows: int | None = None,
) -> CandidateResult:
    """Grid-search ``candidate`` with stratified k-fold CV on ``train``; evaluate on ``test``.

    The returned Pipeline is refitted on the whole training split, or, for a
    :attr:`~Candidate.superlinear` family and a split larger than ``max_rows``, on the
    stratified subsample the search used.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    started = time.perf_counter()
    available = len(train)
    if candidate.superlinear and max_rows is not None:
        train = subsample(train, max_rows, random_state)
    x_train, y_train = features_and_target(train)
    search = GridSearchCV(
        build_pipeline(candidate.factory(random_state)),
        candidate.pipeline_grid(),
        scoring=metric,
        cv=StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=random_state),
        n_jobs=n_jobs,
        refit=True,
        error_score="raise",
    )
    with warnings.catch_warnings():
        # SVC(probability=True) is deprecated from scikit-learn 1.9 and kept until 1.11; the
        # pinned range stays below that (its ONNX graph reproduces the Platt scaling).
        warnings.filterwarnings(
            "ignore", message=".*`probability` parameter", category=FutureWarning
        )
        search.fit(x_train, y_train)
    best = search.best_estimator_
    holdout, confusion = evaluate(best, test)
    index = search.best_index_
    prefix = f"{MODEL_STEP}__"
    return CandidateResult(
        name=candidate.name,
        pipeline=best,
        best_params={k.removeprefix(prefix): v for k, v in search.best_params_.items()},
        cv_score=float(search.cv_results_["mean_test_score"][index]),
        cv_std=float(search.cv_results_["std_test_score"][index]),
        holdout=holdout,
        fit_seconds=time.perf_counter() - started,
        confusion=confusion,
        cv_fold_scores=[
            float(search.cv_results_[f"split{fold}_test_score"][index]) for fold in range(cv_folds)
        ],
        rows=len(train),
        rows_available=available,
    )


def subsample(train: pd.DataFrame, max_rows: int, random_state: int) -> pd.DataFrame:
    """A stratified (on the target), seeded subsample of ``max_rows`` rows; ``train`` itself
    when it is not larger."""
    from sklearn.model_selection import train_test_split

    if len(train) <= max_rows:
        return train
    picked, _ = train_test_split(
        train, train_size=max_rows, random_state=random_state, stratify=train[TARGET]
    )
    return picked.reset_index(drop=True)


def grid_size(candidate: Candidate) -> int:
    """Parameter combinations the search of ``candidate`` tries."""
    from sklearn.model_selection import ParameterGrid

    return len(ParameterGrid(candidate.pipeline_grid()))


def rank(results: list[CandidateResult]) -> list[CandidateResult]:
    """Leaderboard order: CV score of the selection metric (the holdout is kept for the gate
    and reporting, so choosing on it would leak), then name for determinism."""
    return sorted(results, key=lambda r: (-r.cv_score, r.name))
