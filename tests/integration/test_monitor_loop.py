"""The production loop closed on the real stack: traffic through a real API process into the
prediction log on S3, the monitor deployment run by `socialads deploy` on the Prefect server,
its drift event, and the automation that starts a pipeline run which retrains.

The module has a model, experiments and a lake bucket of its own (the registry, the Prefect
server and S3 are the session's). The monitor's schedule is off: the test starts its runs,
each on the window of its own traffic.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from test_pipeline_stack import TERMINAL, Served, start_deploy, wait_for
from test_serve import Server, launch
from testkit import Ran, environ_without_tools, run_cli, traffic

from socialads.data.schema import FEATURES

if TYPE_CHECKING:
    from conftest import StackHandle

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_TIMEOUT_S = 400.0
EVENT = "socialads.model.drift-detected"
USERS = 300


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    tag = secrets.token_hex(3)
    return {
        "model": f"MonitorLoopModel{tag}",
        "bucket": f"loop-{tag}",
        "experiment": f"monitor-loop-{tag}",
        "monitoring": f"monitor-loop-monitoring-{tag}",
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("socialads-loop-home")


@pytest.fixture(scope="module")
def env(stack: StackHandle, home: Path, names: dict[str, str]) -> dict[str, str]:
    """The stack's client environment with this module's model, experiments and bucket."""
    stack.s3fs().mkdir(names["bucket"])
    return (
        environ_without_tools()
        | stack.env
        | {
            "SOCIALADS_HOME": str(home),
            "SOCIALADS_LAKE_URL": f"s3://{names['bucket']}",
            "SOCIALADS_MODEL_NAME": names["model"],
            "SOCIALADS_EXPERIMENT_NAME": names["experiment"],
            "SOCIALADS_MONITORING_EXPERIMENT": names["monitoring"],
            "SOCIALADS_CANDIDATES": "gaussian_nb",
            "SOCIALADS_MONITOR_CRON": "",  # the test starts each monitor run itself
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )


def cli(home: Path, env: dict[str, str], *args: str) -> Ran:
    ran = run_cli(home, env, *args, timeout=600)
    assert ran.returncode == 0, ran.describe()
    return ran


@pytest.fixture(scope="module")
def champion(home: Path, env: dict[str, str]) -> dict[str, Any]:
    """The first champion, trained by `socialads train` against the stack."""
    cli(home, env, "lake", "init")
    report: dict[str, Any] = json.loads(cli(home, env, "train", "--json").stdout)
    assert report["train"]["decision"]["promoted"]
    return report


@pytest.fixture(scope="module")
def prefect_api(stack: StackHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.prefect_api_url, timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def served(
    champion: dict[str, Any], home: Path, env: dict[str, str], prefect_api: httpx.Client
) -> Iterator[tuple[Served, dict[str, str]]]:
    """`socialads deploy` running; the ids of its monitor and pipeline deployments."""
    process = start_deploy(home, env, "deploy-loop")

    def ready() -> dict[str, str] | None:
        if process.process.poll() is not None:
            pytest.fail(f"deploy exited:\n{process.output()}")
        ids = {}
        for name in ("monitor", "pipeline"):
            response = prefect_api.get(f"/deployments/name/{name}/socialads")
            if response.status_code != 200 or response.json()["status"] != "READY":
                return None
            ids[name] = response.json()["id"]
        automations = prefect_api.post("/automations/filter", json={}).json()
        wanted = [a for a in automations if names_match(a, env["SOCIALADS_MODEL_NAME"])]
        return ids if wanted else None

    try:
        yield process, wait_for("the deployments and the automation", ready, 180, 1.0)
    finally:
        process.stop()


def names_match(automation: dict[str, Any], model: str) -> bool:
    match = automation["trigger"].get("match", {})
    return bool(match.get("prefect.resource.id") == f"socialads.model.{model}.*")


@pytest.fixture(scope="module")
def api(champion: dict[str, Any], home: Path, env: dict[str, str]) -> Iterator[Server]:
    """`socialads serve` with the champion, its log flushed every second."""
    server = launch(
        env | {"SOCIALADS_PREDICTION_LOG_FLUSH_SECONDS": "1", "SOCIALADS_RELOAD_INTERVAL": "2"},
        home,
    )
    try:
        server.wait_for("/ready", 200)
        yield server
    finally:
        server.stop()


def send(api: Server, users: Any) -> list[str]:
    """The users' features through /predict/batch; the request ids returned."""
    records = [
        {column: (value if column == "Gender" else float(value)) for column, value in row.items()}
        for row in users[list(FEATURES)].to_dict("records")
    ]
    ids = []
    for first in range(0, len(records), 100):
        response = api.http.post("/predict/batch", json={"records": records[first : first + 100]})
        assert response.status_code == 200, response.text
        ids += [result["request_id"] for result in response.json()["results"]]
    assert len(ids) == len(records)
    return ids


def logged(stack: StackHandle, bucket: str, ids: list[str], prefix: str = "predictions") -> bool:
    """True once every id is in the bucket's prediction log (or ``prefix="feedback"``)."""
    import pandas as pd

    fs = stack.s3fs()
    parts = fs.glob(f"{bucket}/{prefix}/date=*/part-*.parquet")
    seen: set[str] = set()
    for part in parts:
        with fs.open(part, "rb") as handle:
            seen |= set(pd.read_parquet(handle, columns=["request_id"])["request_id"])
    return set(ids) <= seen


def run_monitor(
    api: httpx.Client, served: tuple[Served, dict[str, str]], start: datetime, end: datetime
) -> tuple[dict[str, Any], str]:
    """A run of the monitor deployment on ``[start, end)``, finished; its markdown artifact."""
    process, ids = served
    created = api.post(
        f"/deployments/{ids['monitor']}/create_flow_run",
        json={"parameters": {"start": start.isoformat(), "end": end.isoformat()}},
    ).raise_for_status()
    run_id = created.json()["id"]
    run = wait_for(
        "the monitor run",
        lambda: finished(api, run_id),
        RUN_TIMEOUT_S,
        2.0,
        on_timeout=process.output,
    )
    assert run["state"]["type"] == "COMPLETED", (run["state"], process.output())
    query = {"artifacts": {"key": {"any_": ["monitoring"]}, "flow_run_id": {"any_": [run_id]}}}
    artifacts = api.post("/artifacts/filter", json=query).raise_for_status().json()
    assert len(artifacts) == 1, artifacts
    return run, artifacts[0]["data"]


def finished(api: httpx.Client, run_id: str) -> dict[str, Any] | None:
    run = api.get(f"/flow_runs/{run_id}").raise_for_status().json()
    return run if run["state"]["type"] in TERMINAL else None


def drift_events(api: httpx.Client, since: datetime, model: str) -> list[dict[str, Any]]:
    query = {
        "filter": {
            "occurred": {"since": since.isoformat()},
            "event": {"name": [EVENT]},
            "resource": {"id_prefix": [f"socialads.model.{model}."]},
        },
        "limit": 50,
    }
    return list(api.post("/events/filter", json=query).raise_for_status().json()["events"])


def pipeline_runs(api: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    query = {"flow_runs": {}, "deployments": {"id": {"any_": [deployment_id]}}}
    return list(api.post("/flow_runs/filter", json=query).raise_for_status().json())


def row(markdown: str, column: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(f"| {column} |"))


def test_in_distribution_traffic_is_not_drift_and_starts_no_run(
    stack: StackHandle,
    env: dict[str, str],
    names: dict[str, str],
    api: Server,
    served: tuple[Served, dict[str, str]],
    prefect_api: httpx.Client,
) -> None:
    raw = _raw()
    start = datetime.now(UTC)
    ids = send(api, traffic(raw, USERS, np.random.default_rng(11)))
    wait_for("the log", lambda: logged(stack, names["bucket"], ids), 60)
    end = datetime.now(UTC)
    runs_before = pipeline_runs(prefect_api, served[1]["pipeline"])

    _, markdown = run_monitor(prefect_api, served, start, end)
    assert "**ok**" in markdown, markdown
    time.sleep(10)  # what an event would have needed to reach the automation
    assert drift_events(prefect_api, start, env["SOCIALADS_MODEL_NAME"]) == []
    assert len(pipeline_runs(prefect_api, served[1]["pipeline"])) == len(runs_before)


def test_shifted_traffic_is_flagged_and_the_automation_retrains(
    stack: StackHandle,
    env: dict[str, str],
    names: dict[str, str],
    api: Server,
    served: tuple[Served, dict[str, str]],
    prefect_api: httpx.Client,
    champion: dict[str, Any],
) -> None:
    from mlflow import MlflowClient

    raw = _raw()
    model = env["SOCIALADS_MODEL_NAME"]
    start = datetime.now(UTC)
    users = traffic(raw, USERS, np.random.default_rng(7), age_shift=15, salary_factor=1.6)
    ids = send(api, users)
    # The true outcomes come back: retraining learns from them.
    labels = [
        {"request_id": i, "purchased": int(y)} for i, y in zip(ids, users["Purchased"], strict=True)
    ]
    assert api.http.post("/feedback", json=labels).status_code == 202
    wait_for("the log", lambda: logged(stack, names["bucket"], ids), 60)
    wait_for("the labels", lambda: logged(stack, names["bucket"], ids, "feedback"), 60)
    end = datetime.now(UTC)
    runs_before = {r["id"] for r in pipeline_runs(prefect_api, served[1]["pipeline"])}

    _, markdown = run_monitor(prefect_api, served, start, end)
    assert "**drifted" in markdown.split("\n\n")[1], markdown  # (and degraded: see below)
    assert row(markdown, "Age").endswith("| **drifted** |"), markdown
    assert row(markdown, "EstimatedSalary").endswith("| **drifted** |"), markdown
    assert row(markdown, "Gender").endswith("| stable |"), markdown

    champion_version = champion["train"]["decision"]["version"]
    events = wait_for("the drift event", lambda: drift_events(prefect_api, start, model), 60)
    assert len(events) == 1, events
    event = events[0]
    assert event["resource"]["prefect.resource.id"] == f"socialads.model.{model}.{champion_version}"
    assert event["payload"]["drifted_features"] == ["Age", "EstimatedSalary"]
    assert event["payload"]["rows"] == USERS

    def started() -> list[dict[str, Any]]:
        runs = pipeline_runs(prefect_api, served[1]["pipeline"])
        return [r for r in runs if r["id"] not in runs_before]

    new = wait_for("the automation's pipeline run", started, 120, 2.0, on_timeout=served[0].output)
    assert len(new) == 1, new
    run = wait_for(
        "the retraining run",
        lambda: finished(prefect_api, new[0]["id"]),
        RUN_TIMEOUT_S,
        3.0,
        on_timeout=served[0].output,
    )
    assert run["state"]["type"] == "COMPLETED", (run["state"], served[0].output())

    # The retraining learned from the labelled production rows (training split only) and
    # the gate decided on the unchanged holdout, its reason on the new version.
    fs = stack.s3fs()
    manifest = json.loads(fs.cat(f"{names['bucket']}/processed/manifest.json"))
    assert manifest["production_rows"] == USERS
    assert manifest["train_rows"] == 320 + USERS and manifest["test_rows"] == 80
    assert manifest["test_sha256"] == champion["data_prep"]["test_sha256"]
    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    versions = client.search_model_versions(f"name='{model}'")
    newest = max(versions, key=lambda v: int(v.version))
    assert int(newest.version) == int(champion_version) + 1
    assert newest.tags["promotion.decision"] in {"champion", "challenger"}
    assert newest.tags["promotion.reason"]
    assert client.get_run(newest.run_id).data.params["production_rows"] == str(USERS)


def _raw() -> bytes:
    from socialads.data.lake import bundled_dataset

    return bundled_dataset()
