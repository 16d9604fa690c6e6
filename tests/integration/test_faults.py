"""Faults against real servers: concurrent trainings, a Prefect server restart."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from testkit import CLI, DEPLOYMENTS, environ_without_tools, run_cli

from socialads.local import supervisor
from socialads.local.servers import prefect_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_trainings_at_once_leave_one_consistent_champion(stack: Any, tmp_path: Path) -> None:
    """Two pipeline runs race on the registry (as two deployment runs could): the registry
    ends with one champion, and it is never the worse of the two."""
    from mlflow import MlflowClient

    from socialads.models.registry import TAG_DECISION, TAG_SCORE

    model = f"ConcurrentModel{uuid.uuid4().hex[:8]}"
    env = stack.subprocess_env() | {"SOCIALADS_MODEL_NAME": model}
    init = run_cli(tmp_path, env | {"SOCIALADS_HOME": str(tmp_path / "i")}, "lake", "init")
    assert init.returncode == 0, init.describe()
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


def _prefect_server(home: Path, port: int, log: Path) -> supervisor.Launched:
    """The Prefect server as the embedded default runs it (SQLite in ``home``), started and
    waited for by the supervisor."""
    service = prefect_server(home=home, host="127.0.0.1", port=port)
    launched = supervisor.launch(service, log=log, cwd=home)
    supervisor.wait_healthy([launched], timeout=180)
    return launched


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            result = predicate()
            if result:
                return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def test_deploy_survives_a_prefect_server_restart(tmp_path: Path) -> None:
    """`socialads deploy` keeps serving across a restart of the Prefect server: its
    deployments are Ready again and a run started afterwards completes."""
    port = supervisor.free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = _prefect_server(tmp_path / "prefect", port, tmp_path / "server.log")
    deploy = None
    try:
        env = environ_without_tools()
        env |= {
            "PREFECT_API_URL": api,
            "SOCIALADS_HOME": str(tmp_path / "home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        with (tmp_path / "deploy.log").open("wb") as out:
            deploy = subprocess.Popen(
                [*CLI, "deploy"],
                env=env,
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def deployments() -> dict[str, str]:
            found = httpx.post(f"{api}/deployments/filter", json={}, timeout=5).json()
            names = {
                f["id"]: f["name"]
                for f in httpx.post(f"{api}/flows/filter", json={}, timeout=5).json()
            }
            ready = {names[d["flow_id"]]: d["id"] for d in found if d["status"] == "READY"}
            return ready if len(ready) == len(DEPLOYMENTS) else {}

        _wait(deployments, 180, f"{len(DEPLOYMENTS)} Ready deployments")
        supervisor.stop({"prefect": server.record}, grace=60)
        server.process.wait(timeout=10)
        time.sleep(5)
        assert deploy.poll() is None, "deploy exited when the server went away"

        server = _prefect_server(tmp_path / "prefect", port, tmp_path / "server.log")
        ids = _wait(deployments, 180, "deployments Ready again after the restart")
        run = httpx.post(
            f"{api}/deployments/{ids['data-prep']}/create_flow_run", json={}, timeout=10
        ).json()

        def finished() -> str | None:
            state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=5).json()["state"]["type"]
            return state if state in ("COMPLETED", "FAILED", "CRASHED") else None

        assert _wait(finished, 300, "the flow run") == "COMPLETED"
    finally:
        if deploy is not None and deploy.poll() is None:
            os.killpg(deploy.pid, signal.SIGTERM)
            try:
                deploy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(deploy.pid, signal.SIGKILL)
        supervisor.stop({"prefect": server.record}, grace=30)
        server.process.poll()
