"""The train flow: CV search of every candidate, MLflow tracking, registry and gate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from flows.common import LAKE_IO, flow_settings
from socialads.data.lake import Lake
from socialads.data.processed import read_processed
from socialads.models.cluster import CONNECT_TIMEOUT, check_scheduler
from socialads.models.recording import Recorder
from socialads.models.training import (
    leaderboard_markdown,
    search_named,
    search_outcome,
    search_plan,
)
from socialads.progress import Step, emit
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
    recorder: Recorder, results: list[CandidateResult], train: pd.DataFrame
) -> TrainingReport:
    """Log the best Pipeline to MLflow, register it and move aliases by the gate."""
    report = recorder.finish(results, train, registry_lock)
    logger = get_run_logger()
    best = next(r for r in results if r.name == report.best)
    known = {report.decision.version: best.onnx.model} if best.onnx and best.onnx.model else {}
    try:
        # `socialads predict` then answers from the cache on its first call.
        recorder.call(refresh_cache, known)
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


def search_candidates(
    settings: Settings,
    train: pd.DataFrame,
    test: pd.DataFrame,
    finished: Callable[[CandidateResult], None],
) -> list[CandidateResult]:
    """Search every candidate, calling ``finished`` with each result as it comes: one after
    the other in this process, or with SOCIALADS_DASK_ADDRESS as tasks on that Dask cluster
    (each one's CV fits spread over its workers too, see :mod:`socialads.models.cluster`)."""
    results = []
    if settings.dask_address is None:
        for name in settings.candidates:
            results.append(search(name, train, test, settings))
            finished(results[-1])
        return results
    from prefect_dask.task_runners import DaskTaskRunner

    runner = DaskTaskRunner(
        address=settings.dask_address, client_kwargs={"timeout": CONNECT_TIMEOUT}
    )
    # The searches' own step records are logged on the workers (their task runs' logs):
    # this process reports them too, for the CLI's display and the flow run's log.
    steps = {
        name: Step(
            f"search:{name}",
            "search",
            name,
            detail=f"{search_plan(settings, name, len(train))} on Dask",
        )
        for name in settings.candidates
    }
    # The workers get no credentials: a search reads and writes nothing (the splits are
    # passed to it, its result comes back here).
    shipped = settings.model_copy(
        update={name: None for name, value in settings if isinstance(value, SecretStr)}
    )
    with runner:
        futures = {
            name: runner.submit(
                search, {"name": name, "train": train, "test": test, "settings": shipped}
            )
            for name in settings.candidates
        }
        for name in futures:
            emit(steps[name])
        for name, future in futures.items():
            try:
                result = future.result()
            except BaseException as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                emit(replace(steps[name], status="failed", detail=first))
                raise
            outcome = search_outcome(result, settings.selection_metric)
            emit(replace(steps[name], status="finished", detail=outcome))
            results.append(result)
            finished(result)
    return results


def run_training(settings: Settings) -> TrainingReport:
    """Training steps as tasks, for use inside any flow."""
    if settings.dask_address is not None:  # before anything is read or changed
        cluster = check_scheduler(settings.dask_address)
        get_run_logger().info(
            "searching on the Dask cluster at %s (%d workers, %d threads)",
            cluster.address,
            cluster.workers,
            cluster.threads,
        )
    # MLflow's record is written by a helper process, each candidate's while the next one
    # is searched (see socialads.models.recording).
    with Recorder(settings) as recorder:
        train, test, manifest = load_processed(Lake.from_settings(settings))
        recorder.begin(manifest, test)
        results = search_candidates(settings, train, test, recorder.candidate)
        report = register(recorder, results, train)
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
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Search the candidates on the processed splits, track in MLflow, register and gate.

    Empty parameters take their value from the settings (SOCIALADS_SELECTION_METRIC, ...);
    ``dask_address`` (SOCIALADS_DASK_ADDRESS) runs the search on that Dask scheduler's workers.
    """
    settings = flow_settings(
        selection_metric=selection_metric,
        candidates=candidates,
        cv_folds=cv_folds,
        dask_address=dask_address,
    )
    return run_training(settings).as_dict()
