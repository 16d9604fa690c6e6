"""The train flow: CV search of every candidate, MLflow tracking, registry and gate."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import LAKE_IO, flow_settings
from socialads.data.lake import Lake
from socialads.data.processed import read_processed
from socialads.models.tracking import preload
from socialads.models.training import leaderboard_markdown, search_named, track_and_register
from socialads.serving.oneoff import refresh_cache
from socialads.settings import CandidateName, SelectionMetric

if TYPE_CHECKING:
    import pandas as pd

    from socialads.data.processed import Manifest
    from socialads.models.search import CandidateResult
    from socialads.models.training import TrainingReport
    from socialads.settings import Settings


@task(name="load-processed", **LAKE_IO)
def load_processed(lake: Lake) -> tuple[pd.DataFrame, pd.DataFrame, Manifest]:
    """Read the processed splits named by the data-prep manifest."""
    return read_processed(lake)


@task(name="search", task_run_name="search-{name}", cache_policy=NO_CACHE)
def search(
    name: CandidateName, train: pd.DataFrame, test: pd.DataFrame, settings: Settings
) -> CandidateResult:
    """Grid-search one candidate with stratified k-fold CV; evaluate on the holdout."""
    result = search_named(settings, name, train, test)
    get_run_logger().info("%s: best parameters %s", name, result.best_params)
    return result


@task(name="track-register-gate", cache_policy=NO_CACHE)
def register(
    settings: Settings,
    results: list[CandidateResult],
    train: pd.DataFrame,
    test: pd.DataFrame,
    manifest: Manifest,
) -> TrainingReport:
    """Log runs to MLflow, register the best Pipeline and move aliases by the gate."""
    report = track_and_register(settings, results, train, test, manifest, registry_lock)
    logger = get_run_logger()
    best = next(r for r in results if r.name == report.best)
    known = {report.decision.version: best.onnx.model} if best.onnx and best.onnx.model else {}
    try:
        # `socialads predict` then answers from the cache on its first call.
        refresh_cache(settings, known)
    except Exception as exc:  # an optimisation: predict asks the registry itself otherwise
        logger.warning("could not cache the champion for `socialads predict`: %s", exc)
    return report


REGISTRY_LOCK = "socialads-registry"


@contextmanager
def registry_lock() -> Iterator[None]:
    """One promotion gate at a time across every process talking to this Prefect API
    (a global concurrency limit of one slot, created on first use)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    # The upsert reads, then creates: another run may create it in between.
    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.upsert_global_concurrency_limit_by_name(REGISTRY_LOCK, 1)
    with concurrency(REGISTRY_LOCK, occupy=1, timeout_seconds=600, strict=True):
        yield


def run_training(settings: Settings) -> TrainingReport:
    """Training steps as tasks, for use inside any flow."""
    train, test, manifest = load_processed(Lake.from_settings(settings))
    results = [search(name, train, test, settings) for name in settings.candidates]
    report = register(settings, results, train, test, manifest)
    create_markdown_artifact(
        leaderboard_markdown(report),
        key="leaderboard",
        description=f"Leaderboard and promotion decision ({report.decision.headline()})",
    )
    return report


@flow(name="train", log_prints=True)
def train_flow(
    selection_metric: SelectionMetric | None = None,
    candidates: list[CandidateName] | None = None,
    cv_folds: int | None = None,
) -> dict[str, Any]:
    """Search the candidates on the processed splits, track in MLflow, register and gate.

    Empty parameters take their value from the settings (SOCIALADS_SELECTION_METRIC, ...).
    """
    settings = flow_settings(
        selection_metric=selection_metric, candidates=candidates, cv_folds=cv_folds
    )
    preload(settings)  # MLflow's imports overlap with the search
    return run_training(settings).as_dict()
