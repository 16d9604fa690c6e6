"""One monitoring pass over a window of the prediction log.

The reference is what the serving champion was trained on: the champion version's run names
its data-prep run (param ``processed_run``), whose ``processed/<run>/train.csv`` is read back
under the hashes of that run's own manifest — not whatever the lake's pointer names today.
The champion's predictions on that data are the reference of the prediction drift, and its
figures on that run's holdout are the reference of the live quality.

Evidently computes the drift (its default test per column: K-S or Z-test on small samples,
Wasserstein or Jensen-Shannon on large ones) and renders the HTML reports; the verdicts here
are read from Evidently's own per-column tests.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from socialads.data import production
from socialads.data.production import PREDICTION, PREDICTION_LOG, PROBABILITY
from socialads.data.schema import FEATURES, GENDER, LABELS, TARGET
from socialads.errors import MonitoringError, NoChampionError, RegistryError

if TYPE_CHECKING:
    from datetime import timedelta

    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

    from socialads.data.lake import Lake
    from socialads.settings import Settings

log = logging.getLogger(__name__)

REPORTS = "reports/monitoring"
"""Lake prefix of the HTML reports: ``reports/monitoring/<timestamp>.html``."""
QUALITY_METRICS = ("accuracy", "f1", "precision", "recall")
EVENT = "socialads.model.drift-detected"
"""The Prefect event the monitor flow emits when retraining is due."""
RESOURCE_PREFIX = "socialads.model"
"""Resource ids of model versions in Prefect events: ``socialads.model.<name>.<version>``."""
PROCESSED_RUN_PARAM = "processed_run"

Status = Literal["skipped", "ok", "drifted", "degraded", "drifted and degraded"]


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's drift test of one column: current window against the reference."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    statistic: str
    """What ``reference`` and ``current`` are: ``mean`` or ``share <value>``."""
    reference: float
    current: float

    @property
    def verdict(self) -> str:
        """``drifted`` or ``stable``."""
        return "drifted" if self.drifted else "stable"


@dataclass(frozen=True)
class LiveQuality:
    """The champion's figures on the window's labelled predictions and on its holdout."""

    rows: int
    live: dict[str, float]
    holdout: dict[str, float]
    f1_floor: float

    @property
    def degraded(self) -> bool:
        """True when the live F1 is under the floor."""
        return self.live["f1"] < self.f1_floor


@dataclass(frozen=True)
class MonitorResult:
    """What one monitoring pass found; ``status`` says what to do about it."""

    start: datetime
    end: datetime
    rows: int
    message: str
    status: Status = "skipped"
    model_name: str | None = None
    model_version: str | None = None
    processed_run: str | None = None
    reference_rows: int = 0
    labelled_rows: int = 0
    drift_share: float | None = None
    drift_share_threshold: float | None = None
    features: tuple[ColumnDrift, ...] = ()
    predictions: tuple[ColumnDrift, ...] = ()
    quality: LiveQuality | None = None
    report_uri: str | None = None
    quality_report_uri: str | None = None
    mlflow_run_id: str | None = None

    @property
    def drifted(self) -> bool:
        """True when the share of drifted features reached the threshold."""
        return self.status in ("drifted", "drifted and degraded")

    @property
    def degraded(self) -> bool:
        """True when the live F1 fell under its floor."""
        return self.status in ("degraded", "drifted and degraded")

    @property
    def retrain_due(self) -> bool:
        """Drifted or degraded: the monitor flow emits :data:`EVENT`."""
        return self.drifted or self.degraded

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``socialads monitor --json``)."""
        data = asdict(self)
        data["start"] = self.start.isoformat()
        data["end"] = self.end.isoformat()
        data["retrain_due"] = self.retrain_due
        for group in ("features", "predictions"):
            for item in data[group]:
                item["verdict"] = "drifted" if item["drifted"] else "stable"
        if self.quality is not None:
            data["quality"]["degraded"] = self.quality.degraded
        return data

    def event_payload(self) -> dict[str, Any]:
        """The figures the drift event carries."""
        payload: dict[str, Any] = {
            "status": self.status,
            "window": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "rows": self.rows,
            "drift_share": self.drift_share,
            "drift_share_threshold": self.drift_share_threshold,
            "drifted_features": [c.column for c in self.features if c.drifted],
            "scores": {c.column: c.score for c in (*self.features, *self.predictions)},
            "report": self.report_uri,
            "mlflow_run_id": self.mlflow_run_id,
        }
        if self.quality is not None:
            payload["live_f1"] = self.quality.live["f1"]
            payload["holdout_f1"] = self.quality.holdout["f1"]
            payload["f1_floor"] = self.quality.f1_floor
        return payload

    def markdown(self) -> str:
        """The verdicts as a markdown document (the monitor flow's Prefect artifact)."""
        lines = [
            "# Monitoring",
            "",
            f"Window {self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} UTC: "
            f"**{self.status}**. {self.message}",
            "",
        ]
        if self.status == "skipped":
            return "\n".join(lines)
        lines += [
            "| column | kind | statistic | reference | current | test | score | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for kind, columns in (("feature", self.features), ("prediction", self.predictions)):
            lines += [
                f"| {c.column} | {kind} | {c.statistic} | {_figure(c.reference)} | "
                f"{_figure(c.current)} | {c.method} (threshold {c.threshold:g}) | "
                f"{c.score:.4g} | {'**drifted**' if c.drifted else 'stable'} |"
                for c in columns
            ]
        if self.quality is not None:
            lines += [
                "",
                f"Live quality on {self.quality.rows} labelled predictions "
                f"(F1 floor {self.quality.f1_floor:g}):",
                "",
                "| metric | live | holdout |",
                "|---|---|---|",
                *(
                    f"| {m} | {self.quality.live[m]:.4f} | {self.quality.holdout[m]:.4f} |"
                    for m in QUALITY_METRICS
                ),
            ]
        lines += ["", f"Report: {self.report_uri}"]
        if self.quality_report_uri:
            lines.append(f"Quality report: {self.quality_report_uri}")
        if self.mlflow_run_id:
            lines.append(f"MLflow run: {self.mlflow_run_id}")
        return "\n".join(lines) + "\n"


def event_resource(result: MonitorResult) -> dict[str, str]:
    """The resource of :data:`EVENT`: the model version the monitor watched."""
    return {
        "prefect.resource.id": f"{RESOURCE_PREFIX}.{result.model_name}.{result.model_version}",
        "prefect.resource.name": f"{result.model_name} version {result.model_version}",
        "socialads.model.name": str(result.model_name),
        "socialads.model.version": str(result.model_version),
    }


def _figure(value: float) -> str:
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"


@dataclass
class Reference:
    """The serving champion and the data it was trained on."""

    version: str
    run_id: str
    processed_run: str
    pipeline: Pipeline
    train: pd.DataFrame
    holdout: pd.DataFrame


def champion_reference(client: MlflowClient, settings: Settings, lake: Lake) -> Reference:
    """The champion, its Pipeline and its training run's splits (see the module docstring)."""
    from socialads.data.processed import read_run
    from socialads.models.registry import champion_version, load_version

    current = champion_version(client, settings)
    if current is None:
        raise NoChampionError.of(settings.champion_alias, settings.model_name, settings.mlflow_uri)
    version = str(current.version)
    if not current.run_id:
        raise MonitoringError(f"version {version} of {settings.model_name} names no MLflow run")
    try:
        params = client.get_run(current.run_id).data.params
    except Exception as exc:
        raise RegistryError(
            f"reading run {current.run_id} from {settings.mlflow_uri} failed: {exc}"
        ) from exc
    processed_run = params.get(PROCESSED_RUN_PARAM)
    if not processed_run:
        raise MonitoringError(
            f"the run of version {version} records no {PROCESSED_RUN_PARAM!r} (trained before "
            "per-run data-prep outputs): train again to monitor against its data"
        )
    train, holdout, _ = read_run(lake, processed_run)
    pipeline = load_version(client, settings, version)
    return Reference(version, current.run_id, processed_run, pipeline, train, holdout)


def with_predictions(pipeline: Pipeline, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s features with the model's probability and prediction, as the log has them."""
    features = frame[list(FEATURES)].reset_index(drop=True)
    out = features.copy()
    out[PROBABILITY] = pipeline.predict_proba(features)[:, 1].astype(float)
    out[PREDICTION] = pipeline.predict(features).astype(int)
    if TARGET in frame.columns:
        out[TARGET] = frame[TARGET].astype(int).to_numpy()
    return out


def window(
    settings: Settings,
    start: datetime | None = None,
    end: datetime | None = None,
    since: timedelta | None = None,
) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC: end defaults to now, start to end minus ``since`` (default
    the setting ``monitor_window``)."""
    end = (end or production.now()).astimezone(UTC)
    start = (start or end - (since or settings.monitor_window)).astimezone(UTC)
    if start >= end:
        raise ValueError(f"the window's start {start:%Y-%m-%d %H:%M} is not before its end")
    return start, end


def monitor(
    settings: Settings,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    since: timedelta | None = None,
    log_to_mlflow: bool = True,
) -> MonitorResult:
    """Compare the predictions of ``[start, end)`` with the champion's training data.

    Too few predictions in the window is not an error: the result says so (status
    ``skipped``) and no report is written. Otherwise the Evidently report goes to the lake
    (``reports/monitoring/<timestamp>.html``) and, with the headline numbers, to an MLflow
    run of the monitoring experiment.
    """
    from socialads.data.lake import Lake
    from socialads.models.tracking import connect

    start, end = window(settings, start, end, since)
    lake = Lake.from_settings(settings)
    traffic = production.read(lake, PREDICTION_LOG, start, end)
    span = f"between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC"
    if len(traffic) < settings.monitor_min_rows:
        found = "no predictions" if traffic.empty else f"only {len(traffic)} predictions"
        return MonitorResult(
            start=start,
            end=end,
            rows=len(traffic),
            message=f"{found} {span}; the monitor needs {settings.monitor_min_rows} "
            "(SOCIALADS_MONITOR_MIN_ROWS): no verdict, no report",
        )

    client = connect(settings)
    ref = champion_reference(client, settings, lake)
    reference = with_predictions(ref.pipeline, ref.train)
    current = traffic[[*FEATURES, PROBABILITY, PREDICTION]].astype({PREDICTION: int})
    drift_snapshot = _drift_report(reference, current, settings.monitor_drift_share)
    columns = _column_drifts(drift_snapshot.dict(), reference, current)
    features = tuple(columns[c] for c in FEATURES)
    predictions = tuple(columns[c] for c in (PROBABILITY, PREDICTION))
    share = sum(c.drifted for c in features) / len(features)
    drifted = share >= settings.monitor_drift_share

    labelled = production.labelled_rows(lake, start, end)
    quality = None
    quality_snapshot = None
    if len(labelled) >= settings.monitor_min_labelled:
        holdout = with_predictions(ref.pipeline, ref.holdout)
        quality = LiveQuality(
            rows=len(labelled),
            live=_quality(labelled[TARGET], labelled[PREDICTION]),
            holdout=_quality(holdout[TARGET], holdout[PREDICTION]),
            f1_floor=settings.monitor_f1_floor,
        )
        live = labelled[[*FEATURES, PROBABILITY, PREDICTION, TARGET]].astype({PREDICTION: int})
        quality_snapshot = _quality_report(holdout, live)

    status: Status = "ok"
    degraded = quality is not None and quality.degraded
    if drifted and degraded:
        status = "drifted and degraded"
    elif drifted:
        status = "drifted"
    elif degraded:
        status = "degraded"

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    reports = {f"{stamp}.html": drift_snapshot.get_html_str(as_iframe=False)}
    if quality_snapshot is not None:
        reports[f"{stamp}-quality.html"] = quality_snapshot.get_html_str(as_iframe=False)
    for name, html in reports.items():
        lake.write_bytes(f"{REPORTS}/{name}", html.encode())
    uris = [lake.uri(f"{REPORTS}/{name}") for name in reports]

    result = MonitorResult(
        start=start,
        end=end,
        rows=len(traffic),
        message=_headline(features, share, settings, quality, len(labelled)),
        status=status,
        model_name=settings.model_name,
        model_version=ref.version,
        processed_run=ref.processed_run,
        reference_rows=len(reference),
        labelled_rows=len(labelled),
        drift_share=share,
        drift_share_threshold=settings.monitor_drift_share,
        features=features,
        predictions=predictions,
        quality=quality,
        report_uri=uris[0],
        quality_report_uri=uris[1] if len(uris) > 1 else None,
    )
    if log_to_mlflow:
        run_id = log_monitoring_run(client, settings, result, reports, stamp)
        result = replace(result, mlflow_run_id=run_id)
    return result


def _headline(
    features: tuple[ColumnDrift, ...],
    share: float,
    settings: Settings,
    quality: LiveQuality | None,
    labelled: int,
) -> str:
    moved = [c.column for c in features if c.drifted]
    drift = (
        f"{len(moved)} of {len(features)} features drifted"
        + (f" ({', '.join(moved)})" if moved else "")
        + f": share {share:.2f} {'≥' if share >= settings.monitor_drift_share else '<'} "
        f"{settings.monitor_drift_share:g}"
    )
    if quality is None:
        return (
            f"{drift}; {labelled} labelled predictions, live quality needs "
            f"{settings.monitor_min_labelled} (SOCIALADS_MONITOR_MIN_LABELLED)"
        )
    relation = "<" if quality.degraded else "≥"
    return (
        f"{drift}; live F1 {quality.live['f1']:.3f} {relation} floor {quality.f1_floor:g} on "
        f"{quality.rows} labelled predictions (holdout F1 {quality.holdout['f1']:.3f})"
    )


def _quality(truth: pd.Series, predicted: pd.Series) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    y, p = truth.astype(int), predicted.astype(int)
    return {
        "accuracy": float(accuracy_score(y, p)),
        "f1": float(f1_score(y, p, zero_division=0)),
        "precision": float(precision_score(y, p, zero_division=0)),
        "recall": float(recall_score(y, p, zero_division=0)),
    }


def _definition(*, labelled: bool) -> Any:
    from evidently import BinaryClassification, DataDefinition

    return DataDefinition(
        numerical_columns=[c for c in FEATURES if c != GENDER] + [PROBABILITY],
        categorical_columns=[GENDER, PREDICTION] + ([TARGET] if labelled else []),
        classification=[
            BinaryClassification(
                target=TARGET,
                prediction_labels=PREDICTION,
                prediction_probas=PROBABILITY,
                pos_label=1,
            )
        ]
        if labelled
        else None,
    )


def _drift_report(reference: pd.DataFrame, current: pd.DataFrame, drift_share: float) -> Any:
    """Evidently's drift of the features (one dataset verdict) and of the predictions."""
    from evidently import Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    definition = _definition(labelled=False)
    columns = [*FEATURES, PROBABILITY, PREDICTION]
    report = Report(
        [
            DataDriftPreset(columns=list(FEATURES), drift_share=drift_share),
            ValueDrift(column=PROBABILITY),
            ValueDrift(column=PREDICTION),
        ],
        include_tests=True,
    )
    return report.run(
        Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )


def _quality_report(holdout: pd.DataFrame, live: pd.DataFrame) -> Any:
    """Evidently's classification quality: live labelled predictions against the holdout."""
    from evidently import Dataset, Report
    from evidently.presets import ClassificationPreset

    definition = _definition(labelled=True)
    return Report([ClassificationPreset()]).run(
        Dataset.from_pandas(live.reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(holdout, data_definition=definition),
    )


def _column_drifts(
    snapshot: dict[str, Any], reference: pd.DataFrame, current: pd.DataFrame
) -> dict[str, ColumnDrift]:
    """Each column's ValueDrift metric (its score) and test (its verdict) from the snapshot."""
    scores: dict[str, tuple[float, dict[str, Any]]] = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = (float(metric["value"]), config)
    failed: dict[str, bool] = {}
    for test in snapshot["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith(":ValueDrift"):
            failed[params["column"]] = test["status"] == "FAIL"
    missing = sorted(set(scores) ^ set(failed))
    if missing:  # a change of Evidently's snapshot layout, not of the data
        raise MonitoringError(f"Evidently's report has no drift score or test for {missing}")
    found = {}
    for column, (score, config) in scores.items():
        statistic, ref_value, cur_value = _summary(column, reference[column], current[column])
        found[column] = ColumnDrift(
            column=column,
            method=str(config.get("method")),
            score=score,
            threshold=float(config.get("threshold") or 0.0),
            drifted=failed[column],
            statistic=statistic,
            reference=ref_value,
            current=cur_value,
        )
    return found


def _summary(column: str, reference: pd.Series, current: pd.Series) -> tuple[str, float, float]:
    """The figure a person compares: a mean, or the share of the second category."""
    if column == GENDER:
        return "share Male", float((reference == "Male").mean()), float((current == "Male").mean())
    if column == PREDICTION:
        return (
            f"share {LABELS[1]}",
            float((reference == 1).mean()),
            float((current == 1).mean()),
        )
    return "mean", float(reference.mean()), float(current.mean())


def log_monitoring_run(
    client: MlflowClient,
    settings: Settings,
    result: MonitorResult,
    reports: dict[str, str],
    stamp: str,
) -> str:
    """An MLflow run in the monitoring experiment: the headline numbers and the HTML
    ``reports`` (file name → HTML) under ``reports/``."""
    from socialads.models.tracking import ensure_experiment, finish_run, log_batch

    run_id = None
    try:
        experiment_id = ensure_experiment(client, settings, settings.monitoring_experiment)
        run = client.create_run(
            experiment_id,
            run_name=f"monitor {stamp}",
            tags={
                "socialads.kind": "monitoring",
                "monitor.status": result.status,
                "monitor.report": result.report_uri or "",
            },
        )
        run_id = str(run.info.run_id)
        params = {
            "model_name": result.model_name,
            "model_version": result.model_version,
            PROCESSED_RUN_PARAM: result.processed_run,
            "window_start": result.start.isoformat(),
            "window_end": result.end.isoformat(),
            "drift_share_threshold": result.drift_share_threshold,
            "f1_floor": settings.monitor_f1_floor,
        }
        metrics: dict[str, float] = {
            "rows": result.rows,
            "labelled_rows": result.labelled_rows,
            "drift_share": result.drift_share or 0.0,
            "drifted": float(result.drifted),
            "degraded": float(result.degraded),
        }
        for column in (*result.features, *result.predictions):
            metrics[f"drift_score.{column.column}"] = column.score
            metrics[f"drifted.{column.column}"] = float(column.drifted)
        if result.quality is not None:
            metrics |= {f"live_{k}": v for k, v in result.quality.live.items()}
            metrics |= {f"holdout_{k}": v for k, v in result.quality.holdout.items()}
        log_batch(client, run_id, params, metrics)
        for name, html in reports.items():
            client.log_text(run_id, html, f"reports/{name}")
        finish_run(client, run_id)
    except Exception as exc:
        if run_id is not None:
            with contextlib.suppress(Exception):  # the server may be what failed
                finish_run(client, run_id, failed=True)
        raise RegistryError(
            f"logging the monitoring run to {settings.mlflow_uri} failed: {exc}"
        ) from exc
    return run_id
