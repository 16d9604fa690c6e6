"""This process's environment minus what points socialads and its tools somewhere else.

Subprocesses of the tests (the CLI, `socialads serve`, servers) start from this, then get
exactly the variables their test means them to see.
"""

from __future__ import annotations

import os

TOOL_PREFIXES = ("SOCIALADS_", "MLFLOW_", "PREFECT_", "AWS_", "MINIO_", "DATA_REPO_", "PROMETHEUS_")


def environ_without_tools() -> dict[str, str]:
    """``os.environ`` without any variable of socialads, MLflow, Prefect, S3 or Prometheus."""
    return {k: v for k, v in os.environ.items() if not k.startswith(TOOL_PREFIXES)}
