"""MLflow tracking: one parent run per training, a nested run per candidate."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from socialads.data.processed import Manifest
    from socialads.models.search import CandidateResult
    from socialads.settings import Settings

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
SUBSAMPLE_TAG = "socialads.subsample"
"""Tag of a candidate run searched on a subsample: how many of how many training rows."""
# Packages a process needs to load the model artifact (skops format); listing them spares
# MLflow ~11 s of requirement inference per logged model.
MODEL_REQUIREMENTS = ("scikit-learn", "skops", "numpy", "pandas", "scipy")
# scikit-learn types skops does not trust by default, reviewed for the candidate families we
# train ourselves (trees, KNN's index). Anything else in a model fails the logging step.
SKOPS_TRUSTED_TYPES = (
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
)


@dataclass(frozen=True)
class LoggedModel:
    """Where :func:`log_best_model` put the model: its ``models:/`` URI and MLflow model id."""

    uri: str
    model_id: str


def model_requirements() -> list[str]:
    """Pinned requirements of the model artifact, from this environment."""
    return [f"{name}=={metadata.version(name)}" for name in MODEL_REQUIREMENTS]


def git_commit() -> str | None:
    """The source tree's git commit, when socialads runs from a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def http_environment(settings: Settings) -> dict[str, str]:
    """MLflow's HTTP retry policy, which MLflow reads from the environment only: the CLI
    exports it at start (the API server, its workers and flow runs inherit it). Also no
    download progress bars: a model version's few small files drew one per load."""
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.mlflow_http_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def connect(settings: Settings) -> MlflowClient:
    """A client of the configured tracking server or local store (MLflow's globals untouched)."""
    from mlflow import MlflowClient

    if settings.tracking_uri is None:
        (settings.home / "mlflow").mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at ``uri`` for the calls inside, then restore it and
    the MLFLOW_TRACKING_URI variable (which ``mlflow.set_tracking_uri`` exports).

    Only where MLflow offers no explicit URI: ``mlflow.<flavor>.log_model``, and the local
    registry store, which looks ``models:/<model id>`` sources up through the global URI.
    Everything else goes through an explicit client.
    """
    import mlflow
    from mlflow.environment_variables import MLFLOW_TRACKING_URI

    # MLflow's environment-variable helpers carry no annotations.
    variable: Any = MLFLOW_TRACKING_URI
    exported = variable.get_raw() if variable.defined else None
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if exported is None:
            variable.unset()
        else:
            variable.set(exported)


def ensure_experiment(client: MlflowClient, settings: Settings, name: str | None = None) -> str:
    """The id of experiment ``name`` (default: the training experiment), created on first use
    (with local artifacts for the embedded store)."""
    from mlflow.exceptions import MlflowException

    name = name or settings.experiment_name
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=settings.mlflow_artifact_root)
        except MlflowException as exc:
            # Another training created it since the lookup (two runs starting together).
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _figure_bytes(result: CandidateResult, test: pd.DataFrame) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    from socialads.features.preprocessing import features_and_target

    x_test, y_test = features_and_target(test)
    images: dict[str, bytes] = {}
    for filename, draw in (
        ("confusion_matrix.png", ConfusionMatrixDisplay.from_estimator),
        ("roc_curve.png", RocCurveDisplay.from_estimator),
    ):
        fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
        draw(result.pipeline, x_test, y_test, ax=ax)
        ax.set_title(f"{result.name}: {filename.removesuffix('.png').replace('_', ' ')}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        plt.close(fig)
        images[filename] = buffer.getvalue()
    return images


def log_candidate(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    result: CandidateResult,
    test: pd.DataFrame,
    lineage: Manifest,
    metric: str,
) -> str:
    """Record one candidate as a nested run; returns its run id."""
    import tempfile

    run = client.create_run(
        experiment_id,
        run_name=result.name,
        tags={"mlflow.parentRunId": parent_run_id, "candidate": result.name},
    )
    run_id = run.info.run_id
    try:
        params = {
            **{f"param.{k}": v for k, v in result.best_params.items()},
            "candidate": result.name,
            "search_rows": result.rows,
        }
        if result.subsampled:
            client.set_tag(
                run_id,
                SUBSAMPLE_TAG,
                f"{result.rows} of {result.rows_available} training rows (search_max_rows)",
            )
        metrics = {f"holdout_{k}": v for k, v in result.holdout.items()}
        metrics |= {
            f"cv_{metric}": result.cv_score,
            f"cv_{metric}_std": result.cv_std,
            "fit_seconds": result.fit_seconds,
        }
        if result.onnx is not None:
            metrics |= result.onnx.metrics()
            if result.onnx.reason:
                client.set_tag(run_id, "onnx.reason", result.onnx.reason[:5000])
        log_batch(client, run_id, params | lineage.as_params(), metrics)
        with tempfile.TemporaryDirectory() as tmp:
            for filename, data in _figure_bytes(result, test).items():
                (Path(tmp) / filename).write_bytes(data)
            client.log_artifacts(run_id, tmp, "plots")
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return str(run_id)


def log_batch(
    client: MlflowClient, run_id: str, params: dict[str, Any], metrics: dict[str, float]
) -> None:
    """Log ``params`` and ``metrics`` to a run in one request."""
    import time

    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
    )


def start_parent_run(
    client: MlflowClient, experiment_id: str, lineage: Manifest, settings: Settings
) -> str:
    """Open the training's parent run with its lineage and configuration."""
    tags = {"dataset_sha256": lineage.raw_sha256, "socialads.kind": "training"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = client.create_run(experiment_id, run_name="training", tags=tags)
    params = lineage.as_params() | {
        "selection_metric": settings.selection_metric,
        "cv_folds": settings.cv_folds,
        "candidates": ",".join(settings.candidates),
        "search_max_rows": settings.search_max_rows,
    }
    log_batch(client, run.info.run_id, params, {})
    return str(run.info.run_id)


def log_best_model(
    settings: Settings,
    parent_run_id: str,
    best: CandidateResult,
    train: pd.DataFrame,
    metric: str,
) -> LoggedModel:
    """Log the winning Pipeline (skops format, signature, input example) to the run, with its
    checked ONNX graph, when it has one, as an extra file of the same model."""
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    from socialads.features.preprocessing import features_and_target
    from socialads.models.onnx_export import ONNX_FILE

    x_train, _ = features_and_target(train)
    example = x_train.head(3)
    signature = infer_signature(example, best.pipeline.predict(example))
    onnx = best.onnx.model if best.onnx is not None else None
    # Failures surface through training.track_and_register, which names the server.
    with (
        tempfile.TemporaryDirectory() as tmp,
        global_tracking_uri(settings.mlflow_uri),
        mlflow.start_run(run_id=parent_run_id),
    ):
        extra_files = None
        if onnx is not None:
            (Path(tmp) / ONNX_FILE).write_bytes(onnx)
            extra_files = [str(Path(tmp) / ONNX_FILE)]
        info = mlflow.sklearn.log_model(
            best.pipeline,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            pip_requirements=model_requirements(),
            serialization_format="skops",
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            metadata={"candidate": best.name, "selection_metric": metric},
            extra_files=extra_files,
        )
    return LoggedModel(uri=info.model_uri, model_id=info.model_id)


def finish_run(client: MlflowClient, run_id: str, *, failed: bool = False) -> None:
    """Close a run as FINISHED or FAILED."""
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
