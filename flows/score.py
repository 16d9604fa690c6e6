"""The score flow: batch scoring of files with a registered model, as `socialads score` does."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.common import LAKE_IO, flow_settings
from socialads.data.lake import Lake
from socialads.serving.scoring import (
    ScoreSummary,
    default_output,
    pending_inputs,
    score,
    summary_markdown,
)
from socialads.settings import Settings


@task(name="score-file", task_run_name="score-{source}", **LAKE_IO)
def score_one(
    settings: Settings, source: str, target: str, alias: str | None, model_version: str | None
) -> ScoreSummary:
    """Score one file into one Parquet file (written whole, so a retry is safe)."""
    summary = score(settings, source, target, alias=alias, version=model_version)
    get_run_logger().info(
        "%s → %s: %d scored, %d rejected, version %s",
        source,
        target,
        summary.rows_scored,
        summary.rows_rejected,
        summary.model_version,
    )
    return summary


@flow(name="score", log_prints=True)
def score_flow(
    input: str | None = None,
    output: str | None = None,
    alias: str | None = None,
    model_version: str | None = None,
) -> list[dict[str, Any]]:
    """Score ``input`` into ``output`` (default: the lake's scores/<name>.parquet); with no
    input, every file under the lake's incoming/ that has no scores yet.

    The model is the champion unless ``alias`` or ``model_version`` names another.
    """
    settings = flow_settings()
    lake = Lake.from_settings(settings)
    jobs = [(input, output or default_output(lake, input))] if input else pending_inputs(lake)
    summaries = [score_one(settings, src, dst, alias, model_version) for src, dst in jobs]
    create_markdown_artifact(
        key="score-summary",
        markdown=summary_markdown(summaries),
        description="Files scored by this run",
    )
    return [summary.as_dict() for summary in summaries]
