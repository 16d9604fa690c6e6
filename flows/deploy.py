"""Deployments of the flows, served from one long-running process (`socialads deploy`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from prefect import serve
from prefect.types.entrypoint import EntrypointType

from flows.data_prep import data_prep_flow
from flows.pipeline import pipeline_flow
from flows.score import score_flow
from flows.train import train_flow

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

    from socialads.settings import Settings

DEPLOYMENT_NAME = "socialads"
TAGS = ["socialads"]


def build_deployments(settings: Settings, cron: str | None = None) -> list[RunnerDeployment]:
    """The deployments, with the settings' values as default parameters."""
    prep = {"test_size": settings.test_size, "random_state": settings.random_state}
    training: dict[str, Any] = {
        "selection_metric": settings.selection_metric,
        "candidates": list(settings.candidates),
        "cv_folds": settings.cv_folds,
    }
    common: dict[str, Any] = {
        "tags": TAGS,
        "entrypoint_type": EntrypointType.MODULE_PATH,
        "version": _version(),
    }
    # to_deployment is sync here (called outside an event loop); its annotation says both.
    deployments = [
        pipeline_flow.to_deployment(
            DEPLOYMENT_NAME,
            cron=cron,
            parameters=prep | training,
            description="Data-prep then train; the champion alias moves only through the gate.",
            **common,
        ),
        data_prep_flow.to_deployment(
            DEPLOYMENT_NAME,
            parameters=prep,
            description="Ingest, validate, split and scale; publishes a new processed/<run>/.",
            **common,
        ),
        train_flow.to_deployment(
            DEPLOYMENT_NAME,
            parameters=training,
            description="CV search of the candidates, MLflow tracking, registry and gate.",
            **common,
        ),
        score_flow.to_deployment(
            DEPLOYMENT_NAME,
            cron=settings.score_cron,
            description="Score the lake's incoming/ files into scores/ (or the input given) "
            "with the champion; every prediction goes to the prediction log.",
            **common,
        ),
    ]
    return [cast("RunnerDeployment", deployment) for deployment in deployments]


def _version() -> str:
    from socialads import __version__

    return __version__


def serve_deployments(settings: Settings, cron: str | None = None) -> None:
    """Register the deployments with the Prefect API and execute their runs until stopped."""
    serve(*build_deployments(settings, cron), limit=2)
