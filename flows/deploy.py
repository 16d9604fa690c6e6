"""Deployments of the flows: served from one long-running process (`socialads deploy`), or
registered on a Prefect work pool whose workers run them (`socialads deploy --pool`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from prefect import serve
from prefect.events import DeploymentEventTrigger
from prefect.events.schemas.automations import Posture
from prefect.types.entrypoint import EntrypointType

from flows.data_prep import data_prep_flow
from flows.monitor import monitor_flow
from flows.pipeline import pipeline_flow
from flows.score import score_flow
from flows.train import train_flow
from socialads.errors import ConfigurationError
from socialads.monitoring.monitor import EVENT, RESOURCE_PREFIX

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
            description="Data-prep then train; the champion alias moves only through the gate. "
            f"Also started by the monitor's {EVENT} event (at most once per "
            f"{settings.monitor_cooldown}).",
            triggers=[retrain_trigger(settings)],
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
        monitor_flow.to_deployment(
            DEPLOYMENT_NAME,
            cron=settings.monitor_cron,
            description="Drift and live quality of the prediction log against the champion's "
            "training data; an Evidently report in the lake's reports/monitoring/ and "
            f"{EVENT} when retraining is due.",
            **common,
        ),
    ]
    return [cast("RunnerDeployment", deployment) for deployment in deployments]


RETRAIN_AUTOMATION = "socialads-retrain-on-drift"


def retrain_trigger(settings: Settings) -> DeploymentEventTrigger:
    """Run the pipeline deployment (its default parameters) on the monitor's drift event for
    the settings' model. Reactive, threshold 1: Prefect fires on the first event, then opens
    its next window only after ``monitor_cooldown`` — the events of one drift episode in
    between start nothing."""
    return DeploymentEventTrigger(
        name=RETRAIN_AUTOMATION,
        description=f"Retrain when the monitor reports drift of {settings.model_name}.",
        expect={EVENT},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}.{settings.model_name}.*"},
        posture=Posture.Reactive,
        threshold=1,
        within=settings.monitor_cooldown,
    )


def _version() -> str:
    from socialads import __version__

    return __version__


def serve_deployments(settings: Settings, cron: str | None = None) -> None:
    """Register the deployments with the Prefect API and execute their runs until stopped."""
    serve(*build_deployments(settings, cron), limit=2)


PROCESS_POOL = "process"


@dataclass(frozen=True)
class PoolDeployment:
    """What `socialads deploy --pool` registered."""

    pool: str
    pool_type: str
    created: bool
    deployments: list[str]


def deploy_to_pool(
    settings: Settings, pool: str, cron: str | None = None, image: str | None = None
) -> PoolDeployment:
    """Register the deployments on work pool ``pool``, unpaused; its workers run them.

    A missing pool is created as a process pool (workers run flows as local processes, with
    their own environment's settings). A docker or kubernetes pool, created beforehand with
    ``prefect work-pool create``, needs ``image``: the socialads image its jobs run.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    created = False
    with get_client(sync_client=True) as client:
        try:
            work_pool = client.read_work_pool(pool)
        except ObjectNotFound:
            if image is not None:
                raise ConfigurationError(
                    f"work pool {pool!r} does not exist: an image needs a docker or kubernetes "
                    f"pool, create it first (prefect work-pool create {pool} --type docker)"
                ) from None
            template = ProcessWorker.get_default_base_job_template()
            try:
                work_pool = client.create_work_pool(
                    WorkPoolCreate(name=pool, type=PROCESS_POOL, base_job_template=template)
                )
                created = True
            except ObjectAlreadyExists:  # created by another deploy since the read
                work_pool = client.read_work_pool(pool)
    takes_image = "image" in work_pool.base_job_template.get("variables", {}).get("properties", {})
    if image is not None and not takes_image:
        raise ConfigurationError(
            f"work pool {pool!r} is a {work_pool.type} pool, which runs no images: "
            "drop --image, or name a docker or kubernetes pool"
        )
    if image is None and takes_image:
        raise ConfigurationError(
            f"work pool {pool!r} is a {work_pool.type} pool: give the socialads image "
            "its jobs run with --image"
        )
    names = []
    for deployment in build_deployments(settings, cron):
        # A deployment `socialads deploy` served before is paused since that process stopped.
        deployment.paused = False
        deployment.apply(work_pool_name=pool, image=image)
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return PoolDeployment(pool, work_pool.type, created, names)
