"""The monitor flow: one monitoring pass, its verdicts as an artifact, and the drift event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from flows.common import LAKE_IO, flow_settings
from socialads.monitoring.monitor import EVENT, MonitorResult, event_resource, monitor
from socialads.settings import Settings, parse_duration


@task(name="monitor-window", **LAKE_IO)
def monitor_window(
    settings: Settings, start: datetime | None, end: datetime | None, since: str | None
) -> MonitorResult:
    """Drift and live quality of the window against the champion's training data."""
    return monitor(settings, start, end, since=parse_duration(since) if since else None)


@flow(name="monitor", log_prints=True)
def monitor_flow(
    since: str | None = None, start: datetime | None = None, end: datetime | None = None
) -> dict[str, Any]:
    """Compare the predictions of the last ``since`` (e.g. 24h; or ``start``–``end``) with
    the data the champion was trained on; publish the verdicts, and emit the event
    ``socialads.model.drift-detected`` when the window drifted or the live F1 fell under its
    floor (the pipeline deployment's trigger retrains on it).

    Empty parameters take their value from the settings (SOCIALADS_MONITOR_WINDOW, ...).
    """
    settings = flow_settings()
    result = monitor_window(settings, start, end, since)
    logger = get_run_logger()
    logger.info("%s: %s", result.status, result.message)
    create_markdown_artifact(
        key="monitoring",
        markdown=result.markdown(),
        description=f"Monitoring verdict: {result.status}",
    )
    if result.retrain_due:
        emit_event(EVENT, resource=event_resource(result), payload=result.event_payload())
        logger.info("emitted %s for version %s", EVENT, result.model_version)
    return result.as_dict()
