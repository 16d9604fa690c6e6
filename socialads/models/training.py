"""Training as the pipeline runs it: search every candidate, track, register, gate."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from socialads.models.candidates import CANDIDATES
from socialads.models.cluster import fits_on_cluster
from socialads.models.search import CandidateResult, grid_size, rank, search_candidate
from socialads.progress import step

if TYPE_CHECKING:
    import pandas as pd

    from socialads.data.processed import Manifest
    from socialads.models.registry import Decision
    from socialads.settings import CandidateName, Settings

log = logging.getLogger(__name__)


@dataclass
class TrainingReport:
    """Everything a person wants to know after a training."""

    metric: str
    leaderboard: list[dict[str, Any]]
    best: str
    decision: Decision
    run_id: str
    model_uri: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "metric": self.metric,
            "best": self.best,
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "decision": self.decision.as_dict(),
            "leaderboard": self.leaderboard,
        }


def leaderboard_rows(results: list[CandidateResult], metric: str) -> list[dict[str, Any]]:
    """One row per candidate, best first."""
    return [
        {
            "rank": i,
            "candidate": r.name,
            f"cv_{metric}": round(r.cv_score, 4),
            **{k: round(v, 4) for k, v in r.holdout.items()},
            "params": r.best_params,
            "seconds": round(r.fit_seconds, 2),
            "train_rows": r.rows,
            "subsampled": r.subsampled,
        }
        for i, r in enumerate(rank(results), start=1)
    ]


def leaderboard_markdown(report: TrainingReport) -> str:
    """The leaderboard and the promotion decision as a markdown document."""
    metric = report.metric
    head = (
        f"| # | candidate | cv {metric} | accuracy | precision | recall | f1 | roc auc | params |"
    )
    lines = [
        "# Training leaderboard",
        "",
        f"Selection metric: **{metric}** (cross-validated on the training split; "
        "holdout metrics on the test split).",
        "",
        head,
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.leaderboard:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items())
        lines.append(
            f"| {row['rank']} | {row['candidate']} | {row[f'cv_{metric}']:.4f} | "
            f"{row['accuracy']:.4f} | {row['precision']:.4f} | {row['recall']:.4f} | "
            f"{row['f1']:.4f} | {row['roc_auc']:.4f} | {params} |"
        )
    lines += ["", "## Promotion", "", report.decision.headline(), ""]
    return "\n".join(lines)


def search_named(
    settings: Settings, name: CandidateName, train: pd.DataFrame, test: pd.DataFrame
) -> CandidateResult:
    """Grid-search the candidate family ``name`` with the settings' metric, folds and seed,
    then convert the winner to ONNX and check it (see :mod:`socialads.models.onnx_export`)."""
    from socialads.models.onnx_export import export

    candidate = CANDIDATES[name]
    limit = settings.search_max_rows
    if candidate.superlinear and len(train) > limit:
        log.info(
            "%s: its cost grows faster than the rows; searched and fitted on a stratified "
            "subsample of %d of the %d training rows (SOCIALADS_SEARCH_MAX_ROWS)",
            name,
            limit,
            len(train),
        )
    with step(f"search:{name}", "search", name, search_plan(settings, name, len(train))) as note:
        with fits_on_cluster(settings.dask_address):
            result = search_candidate(
                candidate,
                train,
                test,
                metric=settings.selection_metric,
                cv_folds=settings.cv_folds,
                random_state=settings.random_state,
                n_jobs=settings.n_jobs,
                max_rows=limit,
            )
        result.onnx = export(result.pipeline, test)
        note.detail = search_outcome(result, settings.selection_metric)
    if result.onnx.reason:
        log.info("%s will be served by scikit-learn: %s", name, result.onnx.reason)
    return result


def search_plan(settings: Settings, name: CandidateName, rows: int) -> str:
    """What the search of ``name`` on ``rows`` training rows will do, e.g. ``4 settings x 5
    folds = 20 fits`` (and the subsample, for a family capped by SOCIALADS_SEARCH_MAX_ROWS)."""
    candidate = CANDIDATES[name]
    grid, folds = grid_size(candidate), settings.cv_folds
    plan = f"{grid} settings x {folds} folds = {grid * folds} fits"
    if candidate.superlinear and rows > settings.search_max_rows:
        plan += f" on a subsample of {settings.search_max_rows:,} of {rows:,} rows"
    return plan


def search_outcome(result: CandidateResult, metric: str) -> str:
    """One line on a finished search: CV score and folds, holdout score, time, engine."""
    engine = "ONNX" if result.onnx is not None and result.onnx.model is not None else "scikit-learn"
    return (
        f"cv {metric} {result.cv_score:.4f} ± {result.cv_std:.4f} "
        f"[{' '.join(f'{s:.3f}' for s in result.cv_fold_scores)}], "
        f"holdout {metric} {result.score(metric):.4f}, {result.fit_seconds:.1f} s, "
        f"{engine} serving"
        + (
            f", subsample {result.rows:,} of {result.rows_available:,} rows"
            if result.subsampled
            else ""
        )
    )


def search_all(
    settings: Settings, train: pd.DataFrame, test: pd.DataFrame
) -> list[CandidateResult]:
    """Grid-search every configured candidate."""
    return [search_named(settings, name, train, test) for name in settings.candidates]


def track_and_register(
    settings: Settings,
    results: list[CandidateResult],
    train: pd.DataFrame,
    test: pd.DataFrame,
    lineage: Manifest,
    gate_lock: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> TrainingReport:
    """Record the finished training in MLflow, register the best Pipeline and apply the gate
    (under ``gate_lock``, which serialises promotions across processes), in this process.

    The train flow records while it searches, from a helper process
    (:class:`~socialads.models.recording.Recorder`); the steps are the same. Failures of the
    tracking server surface as :class:`RegistryError` naming it.
    """
    from socialads.models.recording import Recorder

    with Recorder(settings, in_process=True) as recorder:
        recorder.begin(lineage, test)
        for result in rank(results):
            recorder.candidate(result)
        return recorder.finish(results, train, gate_lock)
