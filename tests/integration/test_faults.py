"""Faults against the real stack: concurrent trainings share one registry consistently."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-m", "socialads"]


def test_two_trainings_at_once_leave_one_consistent_champion(stack: Any, tmp_path: Path) -> None:
    """Two pipeline runs race on the registry (as two deployment runs could): the registry
    ends with one champion, and it is never the worse of the two."""
    from mlflow import MlflowClient

    from socialads.models.registry import TAG_DECISION, TAG_SCORE

    model = f"ConcurrentModel{uuid.uuid4().hex[:8]}"
    env = stack.subprocess_env() | {"SOCIALADS_MODEL_NAME": model}
    init = subprocess.run(
        [*CLI, "lake", "init"],
        env=env | {"SOCIALADS_HOME": str(tmp_path / "i")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    runs = []
    for family in ("gaussian_nb", "knn"):  # holdout F1 0.821 and 0.867 on the default split
        home = tmp_path / family
        home.mkdir()
        runs.append(
            subprocess.Popen(
                [*CLI, "train", "--candidates", family],
                env=env | {"SOCIALADS_HOME": str(home)},
                cwd=home,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [run.communicate(timeout=900) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]

    client = MlflowClient(tracking_uri=stack.mlflow_url)
    versions = client.search_model_versions(f"name='{model}'")
    assert len(versions) == 2
    scores = {str(v.version): float(v.tags[TAG_SCORE]) for v in versions}
    champion = str(client.get_model_version_by_alias(model, "champion").version)
    assert scores[champion] == max(scores.values())
    other = next(v for v in scores if v != champion)
    assert scores[other] < scores[champion]
    decisions = {str(v.version): v.tags[TAG_DECISION] for v in versions}
    # The better version was promoted; the worse either lost the gate or was promoted first
    # and then replaced (it then holds no alias).
    assert decisions[champion] == "champion"
    aliases = client.get_registered_model(model).aliases
    assert aliases.get("champion") == champion
    assert aliases.get("challenger") in (None, other)
