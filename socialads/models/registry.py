"""Model registry: new versions, the promotion gate and the champion alias."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from socialads.errors import NoChampionError, RegistryError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from sklearn.pipeline import Pipeline

    from socialads.models.tracking import LoggedModel
    from socialads.settings import Settings

log = logging.getLogger(__name__)

TAG_DECISION = "promotion.decision"
TAG_REASON = "promotion.reason"
TAG_METRIC = "promotion.metric"
TAG_SCORE = "promotion.score"
TAG_CHAMPION_SCORE = "promotion.champion_score"
TAG_PREVIOUS = "promotion.previous_champion"
TAG_ONNX_REASON = "onnx.reason"


@dataclass(frozen=True)
class Decision:
    """Outcome of the promotion gate for one new version."""

    promoted: bool
    version: str
    alias: str
    metric: str
    score: float
    champion_version: str | None
    champion_score: float | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and Prefect artifacts."""
        return asdict(self)

    def headline(self) -> str:
        """One line for people, e.g. ``promoted version 3 to champion: f1 0.8872 > 0.8667``."""
        if self.promoted:
            return f"promoted version {self.version} to {self.alias}: {self.reason}"
        return (
            f"kept champion version {self.champion_version}; "
            f"version {self.version} is {self.alias}: {self.reason}"
        )


def gate(score: float, champion_score: float | None, metric: str) -> tuple[bool, str]:
    """Promote only a strictly better model (ties keep the champion). Returns (promote, reason)."""
    if champion_score is None:
        return True, f"no champion yet; {metric} {score:.4f}"
    if score > champion_score:
        return True, f"{metric} {score:.4f} > {champion_score:.4f}"
    relation = "=" if score == champion_score else "<"
    return False, f"{metric} {score:.4f} {relation} champion's {champion_score:.4f}"


_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def champion_version(client: MlflowClient, settings: Settings) -> ModelVersion | None:
    """The version behind the champion alias, or None when there is none."""
    return alias_version(client, settings, settings.champion_alias)


def alias_version(client: MlflowClient, settings: Settings, alias: str) -> ModelVersion | None:
    """The version behind ``alias`` of the settings' model, or None when there is none."""
    return _version_or_none(
        lambda: client.get_model_version_by_alias(settings.model_name, alias),
        f"reading the {alias!r} alias from {settings.mlflow_uri}",
    )


def find_version(client: MlflowClient, settings: Settings, version: str) -> ModelVersion | None:
    """Version ``version`` of the settings' model, or None when it does not exist."""
    return _version_or_none(
        lambda: client.get_model_version(settings.model_name, version),
        f"reading version {version} from {settings.mlflow_uri}",
    )


def _version_or_none(read: Callable[[], ModelVersion], what: str) -> ModelVersion | None:
    """``read()``; None when MLflow says it does not exist, RegistryError on other failures."""
    from mlflow.exceptions import MlflowException

    try:
        return read()
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in _MISSING:
            return None
        raise RegistryError(f"{what} failed: {exc}") from exc


def load_version(client: MlflowClient, settings: Settings, version: str) -> Pipeline:
    """Load a registered version's Pipeline (skops format: no arbitrary pickle)."""
    import tempfile

    import mlflow.artifacts
    import mlflow.sklearn

    uri = f"models:/{settings.model_name}/{version}"
    try:
        # Resolved by the client: MLflow resolves models:/ URIs through its global registry.
        location = client.get_model_version_download_uri(settings.model_name, version)
        with tempfile.TemporaryDirectory(prefix="socialads-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=tmp, tracking_uri=settings.mlflow_uri
            )
            return mlflow.sklearn.load_model(local)
    except Exception as exc:
        raise RegistryError(f"loading {uri} from {settings.mlflow_uri} failed: {exc}") from exc


def load_onnx(
    client: MlflowClient, settings: Settings, version: str
) -> tuple[bytes | None, str | None]:
    """A registered version's checked ONNX graph, or None and why there is none.

    The graph is the file :data:`~socialads.models.onnx_export.ONNX_ARTIFACT` among the
    version's model artifacts; training leaves it out when the conversion failed or
    disagreed (reason in the version tag ``onnx.reason``), and versions registered before
    the conversion existed have none.
    """
    import tempfile
    from pathlib import Path

    import mlflow.artifacts

    from socialads.models.onnx_export import ONNX_ARTIFACT

    uri = f"models:/{settings.model_name}/{version}"
    folder, name = ONNX_ARTIFACT.rsplit("/", 1)
    try:
        # Resolved by the client: MLflow resolves models:/ URIs through its global registry.
        location = client.get_model_version_download_uri(settings.model_name, version)
        listed = mlflow.artifacts.list_artifacts(
            artifact_uri=f"{location}/{folder}", tracking_uri=settings.mlflow_uri
        )
        if not any(Path(entry.path).name == name for entry in listed):
            tags = client.get_model_version(settings.model_name, version).tags
            return None, tags.get(TAG_ONNX_REASON) or "no ONNX graph in this model version"
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location}/{ONNX_ARTIFACT}",
                dst_path=tmp,
                tracking_uri=settings.mlflow_uri,
            )
            return Path(path).read_bytes(), None
    except Exception as exc:
        raise RegistryError(
            f"reading the ONNX graph of {uri} from {settings.mlflow_uri} failed: {exc}"
        ) from exc


def register_version(
    client: MlflowClient, settings: Settings, model: LoggedModel, run_id: str
) -> str:
    """Register the logged ``model`` as a new version of the settings' model; its number."""
    from mlflow.exceptions import MlflowException

    from socialads.models.tracking import global_tracking_uri

    try:
        client.create_registered_model(settings.model_name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    with global_tracking_uri(settings.mlflow_uri):
        created = client.create_model_version(
            settings.model_name, model.uri, run_id=run_id, model_id=model.model_id
        )
    return str(created.version)


def register_and_gate(
    client: MlflowClient,
    settings: Settings,
    model: LoggedModel,
    run_id: str,
    score: float,
    test: pd.DataFrame,
    lock: Callable[[], AbstractContextManager[object]] = nullcontext,
    version_tags: dict[str, str] | None = None,
) -> Decision:
    """Register ``model`` as a new version and move the aliases by the gate
    (:func:`register_tagged`, then :func:`gate_version` under ``lock``, which serialises gates
    across processes: the flows pass a Prefect global concurrency limit)."""
    version = register_tagged(client, settings, model, run_id, version_tags)
    with lock():
        return gate_version(client, settings, version, run_id, score, test)


def register_tagged(
    client: MlflowClient,
    settings: Settings,
    model: LoggedModel,
    run_id: str,
    version_tags: dict[str, str] | None = None,
) -> str:
    """Register ``model`` as a new version with ``version_tags`` set on it; its number."""
    try:
        version = register_version(client, settings, model, run_id)
    except Exception as exc:
        raise RegistryError(
            f"registering the model in {settings.mlflow_uri} failed: {exc}"
        ) from exc
    try:
        for key, value in (version_tags or {}).items():
            client.set_model_version_tag(settings.model_name, version, key, value)
    except Exception as exc:
        raise RegistryError(
            f"tagging version {version} in {settings.mlflow_uri} failed: {exc}"
        ) from exc
    return version


def gate_version(
    client: MlflowClient,
    settings: Settings,
    version: str,
    run_id: str,
    score: float,
    test: pd.DataFrame,
) -> Decision:
    """The promotion gate for registered ``version``: the current champion is re-scored on
    the same holdout ``test`` so both sides are compared on equal terms, read again just
    before the alias moves, and the gate runs again if another training moved it meanwhile.
    Run it under the registry's lock (see :func:`register_and_gate`)."""
    from socialads.models.search import evaluate

    metric = settings.selection_metric
    scored: dict[str, float] = {}
    for _ in range(5):
        current = champion_version(client, settings)
        current_v = str(current.version) if current is not None else None
        champion_score: float | None = None
        if current_v is not None and current_v not in scored:
            scored[current_v] = evaluate(load_version(client, settings, current_v), test)[0][metric]
        if current_v is not None:
            champion_score = scored[current_v]
        promote, reason = gate(score, champion_score, metric)
        latest = champion_version(client, settings)
        if (str(latest.version) if latest is not None else None) == current_v:
            break
        log.info("the champion moved while gating; gating again")
    else:
        raise RegistryError("the champion alias kept moving during the promotion gate")

    alias = settings.champion_alias if promote else settings.challenger_alias
    decision = Decision(promote, version, alias, metric, score, current_v, champion_score, reason)
    tags = {
        TAG_DECISION: "champion" if promote else "challenger",
        TAG_REASON: reason,
        TAG_METRIC: metric,
        TAG_SCORE: f"{score:.6f}",
        TAG_CHAMPION_SCORE: "" if champion_score is None else f"{champion_score:.6f}",
        TAG_PREVIOUS: current_v or "",
        "promotion.decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        # The alias first: the window between the re-check above and the move stays short.
        client.set_registered_model_alias(settings.model_name, alias, version)
        for key, value in tags.items():
            client.set_model_version_tag(settings.model_name, version, key, value)
            client.set_tag(run_id, key, value)
    except Exception as exc:
        raise RegistryError(
            f"updating the registry at {settings.mlflow_uri} failed: {exc}"
        ) from exc
    log.info("%s", decision.headline())
    return decision


@dataclass
class ChampionModel:
    """The champion as loaded for prediction."""

    name: str
    version: str
    alias: str
    run_id: str | None
    pipeline: Pipeline | None
    """The scikit-learn Pipeline (None: loaded from the registry if it is needed)."""
    metrics: dict[str, float]
    loaded_at: datetime
    onnx: bytes | None = None
    """The version's checked ONNX graph, when it has one."""
    onnx_reason: str | None = None
    """Why the version has no ONNX graph."""


def load_champion(settings: Settings, client: MlflowClient | None = None) -> ChampionModel:
    """Load the champion's ONNX graph (when it has one), its Pipeline and its metadata.

    Raises :class:`NoChampionError` when no champion exists yet.
    """
    from socialads.models.tracking import connect

    client = client or connect(settings)
    current = champion_version(client, settings)
    if current is None:
        raise NoChampionError.of(settings.champion_alias, settings.model_name, settings.mlflow_uri)
    version = str(current.version)
    onnx, reason = load_onnx(client, settings, version)
    # The Pipeline too, even with a graph: the fallback is then ready if ONNX Runtime refuses
    # the graph, and a long-running server pays scikit-learn's imports at its first load, not
    # in the middle of traffic when the alias moves to a version without a graph.
    pipeline = load_version(client, settings, version)
    metrics: dict[str, float] = {}
    if current.run_id:
        try:
            metrics = dict(client.get_run(current.run_id).data.metrics)
        except Exception as exc:  # metrics are informative; the model itself loaded fine
            log.warning("could not read the metrics of run %s: %s", current.run_id, exc)
    return ChampionModel(
        name=settings.model_name,
        version=version,
        alias=settings.champion_alias,
        run_id=current.run_id,
        pipeline=pipeline,
        metrics=metrics,
        loaded_at=datetime.now(UTC),
        onnx=onnx,
        onnx_reason=reason,
    )
