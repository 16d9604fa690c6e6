"""The CLI and the Prefect deployments against the real stack (S3, MLflow server, Prefect server).

Every step runs `socialads` as a subprocess with the stack's environment, a SOCIALADS_HOME of
this module and two quick candidate families (the full search is covered elsewhere). The steps
share the stack (and so the registry): they assert changes relative to what they find.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import httpx
import pytest
from testkit import CLI, DEPLOYMENTS, Ran, environ_without_tools, run_cli

from socialads.data.lake import MANIFEST_KEY, RAW_KEY, bundled_dataset, sha256
from socialads.local.supervisor import group_members
from socialads.settings import CANDIDATE_NAMES, SelectionMetric, env_names

if TYPE_CHECKING:
    from conftest import StackHandle
    from mlflow import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CANDIDATES = ["gaussian_nb", "knn"]
MODEL = "SocialNetworkAdsModel"
EXPERIMENT = "Social_Network_Ads_Experiment"
DATA_BUCKET = "data"
ARTIFACTS_BUCKET = "mlflow"
# Deployments whose every parameter defaults to a setting (no default parameters of their own).
NO_DEFAULTS = ("flows.score.score_flow", "flows.monitor.monitor_flow")
# Everything the settings read S3 from (the rest of AWS_* never reaches the CLI: see cli_env).
S3_CLIENT_VARS = tuple(
    name
    for field in ("s3_endpoint_url", "s3_access_key", "s3_secret_key", "s3_region")
    for name in env_names(field)
)
UNREACHABLE_BOUND_S = 60.0
FLOW_RUN_TIMEOUT_S = 300.0
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# -- helpers -----------------------------------------------------------------------------------


def registry_state(client: MlflowClient) -> tuple[int, str | None]:
    """(number of versions of the model, champion version) as the server has them."""
    from mlflow.exceptions import MlflowException

    count = len(client.search_model_versions(f"name='{MODEL}'"))
    try:
        champion: str | None = str(client.get_model_version_by_alias(MODEL, "champion").version)
    except MlflowException:
        champion = None
    return count, champion


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    interval: float = 1.0,
    on_timeout: Callable[[], str] = lambda: "",
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")
        time.sleep(interval)


def closed_port() -> socket.socket:
    """A bound loopback socket that does not listen: connecting to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SOCIALADS_HOME (and working directory) of every CLI call of this module."""
    return tmp_path_factory.mktemp("socialads-stack-home")


@pytest.fixture(scope="module")
def cli_env(stack: StackHandle, home: Path) -> dict[str, str]:
    """The stack's client environment, this module's home and the two quick candidates."""
    return (
        environ_without_tools()
        | stack.env
        | {
            "SOCIALADS_HOME": str(home),
            "SOCIALADS_CANDIDATES": ",".join(CANDIDATES),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )


@pytest.fixture(scope="module")
def cli(home: Path, cli_env: dict[str, str]) -> Callable[..., Ran]:
    """``cli("train", env={...}, drop=(...))`` runs socialads with the module's environment."""

    def call(
        *args: str,
        env: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
        timeout: float = 600,
    ) -> Ran:
        environment = {k: v for k, v in cli_env.items() if k not in drop} | (env or {})
        return run_cli(home, environment, *args, timeout=timeout)

    return call


@pytest.fixture(scope="module")
def mlflow_client(stack: StackHandle) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)


@pytest.fixture(scope="module")
def s3(stack: StackHandle) -> Any:
    return stack.s3fs()


@pytest.fixture(scope="module")
def trained(cli: Callable[..., Ran], mlflow_client: MlflowClient) -> dict[str, Any]:
    """One `socialads train --json` against the stack, shared by the steps that need a model."""
    before = registry_state(mlflow_client)
    ran = cli("train", "--json")
    assert ran.returncode == 0, ran.describe()
    return {"ran": ran, "report": json.loads(ran.stdout), "before": before}


@pytest.fixture(scope="module")
def prefect_api(stack: StackHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.prefect_api_url, timeout=15) as client:
        yield client


@dataclass
class Served:
    """A `socialads deploy` process running in the background."""

    process: subprocess.Popen[bytes]
    log: Path
    exit: dict[str, Any] = field(default_factory=dict)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self, grace: float = 30.0) -> dict[str, Any]:
        """SIGTERM (what `docker stop`/systemd send), wait; SIGKILL the group if it lingers."""
        if self.exit:
            return self.exit
        started = time.perf_counter()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        graceful = True
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            graceful = False
        pgid = self.process.pid  # started with start_new_session: its own group
        if group_members(pgid):
            graceful = False
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.exit = {
            "returncode": self.process.returncode,
            "graceful": graceful,
            "seconds": round(time.perf_counter() - started, 1),
        }
        return self.exit


def start_deploy(home: Path, env: dict[str, str], name: str, *args: str) -> Served:
    log = home / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*CLI, "deploy", *args],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Served(process, log)


def deployments(api: httpx.Client) -> dict[str, dict[str, Any]]:
    """``flow/deployment`` → deployment, for the deployments tagged socialads."""
    found = api.post(
        "/deployments/filter", json={"deployments": {"tags": {"all_": ["socialads"]}}}
    ).raise_for_status()
    flows = api.post("/flows/filter", json={}).raise_for_status().json()
    names = {f["id"]: f["name"] for f in flows}
    return {f"{names[d['flow_id']]}/{d['name']}": d for d in found.json()}


def wait_served(
    api: httpx.Client, served: Served, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, dict[str, Any]]:
    def ready() -> dict[str, dict[str, Any]] | None:
        if served.process.poll() is not None:
            pytest.fail(
                f"socialads deploy exited with {served.process.returncode}\n{served.output()}"
            )
        current = deployments(api)
        if set(DEPLOYMENTS) <= set(current) and all(check(current[n]) for n in DEPLOYMENTS):
            return current
        return None

    return wait_for(what, ready, timeout=180, interval=1.0, on_timeout=served.output)


@pytest.fixture(scope="module")
def served(
    home: Path, cli_env: dict[str, str], prefect_api: httpx.Client
) -> Iterator[tuple[Served, dict[str, dict[str, Any]]]]:
    """`socialads deploy` in the background, once its deployments are ready."""
    process = start_deploy(home, cli_env, "deploy")
    try:
        ready = wait_served(
            prefect_api,
            process,
            # The score and monitor flows have no default parameters (their input names a
            # file or incoming/; the window defaults to the setting).
            lambda d: (
                d["status"] == "READY"
                and not d["paused"]
                and (d["parameters"] or d["entrypoint"] in NO_DEFAULTS)
            ),
            "the deployments to be registered, unpaused and polled",
        )
        yield process, ready
    finally:
        process.stop()


# -- 1. lake init ------------------------------------------------------------------------------


def test_lake_init_creates_buckets_uploads_raw_and_never_overwrites(
    cli: Callable[..., Ran], s3: Any
) -> None:
    raw = f"{DATA_BUCKET}/{RAW_KEY}"
    first = cli("lake", "init", timeout=120)
    assert first.returncode == 0, first.describe()
    assert {DATA_BUCKET, ARTIFACTS_BUCKET} <= {b.rstrip("/") for b in s3.ls("")}
    assert s3.cat(raw) == bundled_dataset()
    assert f"raw data: s3://{DATA_BUCKET}/{RAW_KEY}" in first.stdout

    again = cli("lake", "init", timeout=120)
    assert again.returncode == 0, again.describe()
    assert again.stdout.splitlines()[:3] == [
        f"found s3://{DATA_BUCKET}",
        f"found s3://{ARTIFACTS_BUCKET}",
        f"kept the raw file at s3://{DATA_BUCKET}/{RAW_KEY}",
    ]
    assert s3.cat(raw) == bundled_dataset()

    custom = b"Gender,Age,EstimatedSalary,Purchased\nMale,30,50000,0\n"
    s3.pipe(raw, custom)
    try:
        kept = cli("lake", "init", timeout=120)
        assert kept.returncode == 0, kept.describe()
        assert f"kept the raw file at s3://{DATA_BUCKET}/{RAW_KEY}" in kept.stdout
        assert s3.cat(raw) == custom
    finally:
        s3.pipe(raw, bundled_dataset())


# -- 2. train ----------------------------------------------------------------------------------


def test_train_writes_the_lake_tracks_registers_and_gates_on_the_servers(
    trained: dict[str, Any], mlflow_client: MlflowClient, s3: Any
) -> None:
    report = trained["report"]
    train = report["train"]
    decision = train["decision"]

    # Lake outputs in the data bucket under the run's prefix, with the lineage of the raw file.
    manifest = json.loads(s3.cat(f"{DATA_BUCKET}/{MANIFEST_KEY}"))
    for key in (manifest["train_key"], manifest["test_key"], manifest["scaler_key"]):
        assert key.startswith(f"processed/{manifest['run_id']}/"), key
        assert s3.exists(f"{DATA_BUCKET}/{key}"), key
    assert manifest["raw_sha256"] == sha256(bundled_dataset())
    assert manifest["raw_uri"] == f"s3://{DATA_BUCKET}/{RAW_KEY}"
    assert (manifest["train_rows"], manifest["test_rows"]) == (320, 80)
    assert report["data_prep"]["raw_sha256"] == manifest["raw_sha256"]

    # The registry on the server: one more version, gated, champion alias set.
    count_before, champion_before = trained["before"]
    count, champion = registry_state(mlflow_client)
    assert count == count_before + 1
    version = mlflow_client.get_model_version(MODEL, decision["version"])
    assert version.run_id == train["run_id"]
    tags = version.tags
    assert tags["promotion.decision"] == ("champion" if decision["promoted"] else "challenger")
    assert tags["promotion.reason"] == decision["reason"] and tags["promotion.reason"]
    assert tags["promotion.metric"] == "f1"
    if champion_before is None:
        assert decision["promoted"] and champion == decision["version"]
    else:
        assert champion == (decision["version"] if decision["promoted"] else champion_before)
    assert champion is not None
    run = mlflow_client.get_run(train["run_id"])
    assert run.data.tags["promotion.decision"] == tags["promotion.decision"]
    assert run.data.params["candidates"] == ",".join(CANDIDATES)
    assert run.data.params["processed_run"] == manifest["run_id"]

    # The model's artifacts went through the server's proxy into the mlflow bucket.
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    model_id = train["model_uri"].removeprefix("models:/")
    assert version.source == train["model_uri"]
    model_dir = f"{ARTIFACTS_BUCKET}/{experiment.experiment_id}/models/{model_id}/artifacts"
    files = {path.rsplit("/", 1)[1] for path in s3.find(model_dir)}
    assert "MLmodel" in files
    assert any(name.endswith(".skops") for name in files), files
    assert "model.pkl" not in files

    # One nested run per candidate, with metrics and plots.
    children = mlflow_client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert sorted(child.info.run_name for child in children) == sorted(CANDIDATES)
    for child in children:
        assert child.info.status == "FINISHED"
        for metric in ("cv_f1", "holdout_f1", "holdout_accuracy", "holdout_roc_auc"):
            assert metric in child.data.metrics, (child.info.run_name, metric)
        plots = {a.path for a in mlflow_client.list_artifacts(child.info.run_id, "plots")}
        assert plots == {"plots/confusion_matrix.png", "plots/roc_curve.png"}
        stored = f"{ARTIFACTS_BUCKET}/{experiment.experiment_id}/{child.info.run_id}/artifacts"
        assert s3.cat(f"{stored}/plots/roc_curve.png").startswith(b"\x89PNG")


# -- 3. predict without S3 credentials ---------------------------------------------------------


@pytest.mark.usefixtures("trained")
def test_predict_answers_from_the_server_registry_without_s3_credentials(
    cli: Callable[..., Ran], mlflow_client: MlflowClient, tmp_path: Path
) -> None:
    champion = registry_state(mlflow_client)[1]
    nowhere = str(tmp_path / "no-aws-config")
    ran = cli(
        "predict",
        "--gender",
        "Female",
        "--age",
        "45",
        "--salary",
        "90000",
        drop=S3_CLIENT_VARS,
        # No credentials from files either: the model must come through the MLflow server.
        env={"AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_CONFIG_FILE": nowhere},
        timeout=180,
    )
    assert ran.returncode == 0, ran.describe()
    answer = json.loads(ran.stdout)
    assert answer["prediction"] == 1
    assert answer["label"] == "COMPRA"
    assert answer["model_version"] == champion
    assert 0.5 < answer["probability"] <= 1


# -- 4. wrong secret, unreachable endpoint -----------------------------------------------------


def assert_one_clear_error(ran: Ran, endpoint: str) -> str:
    assert ran.returncode != 0, ran.describe()
    assert len(ran.error_lines) == 1, ran.describe()
    line = ran.error_lines[0]
    assert f"endpoint {endpoint}" in line, ran.describe()
    assert f"s3://{DATA_BUCKET}" in line, ran.describe()
    assert "--verbose for details" not in line, "a designed message, not the generic fallback"
    assert "Traceback" not in ran.stdout + ran.stderr, ran.describe()
    return line


@pytest.mark.usefixtures("trained")
def test_wrong_secret_and_unreachable_endpoint_fail_clearly_and_change_nothing(
    cli: Callable[..., Ran],
    mlflow_client: MlflowClient,
    stack: StackHandle,
    s3: Any,
    record_property: Callable[[str, object], None],
) -> None:
    registry_before = registry_state(mlflow_client)
    lake_before = {path: s3.cat(path) for path in s3.find(DATA_BUCKET)}

    with closed_port() as sock:
        port = sock.getsockname()[1]
        unreachable = f"http://127.0.0.1:{port}"
        closed = {"SOCIALADS_S3_ENDPOINT_URL": unreachable, "MLFLOW_S3_ENDPOINT_URL": unreachable}
        # The unreachable calls mostly wait on retries: run them alongside the others.
        with ThreadPoolExecutor(max_workers=2) as pool:
            slow = {
                args: pool.submit(cli, *args, env=closed, timeout=300)
                for args in (("lake", "init"), ("train",))
            }
            wrong = {
                args: cli(*args, env={"AWS_SECRET_ACCESS_KEY": "wrong"}, timeout=300)
                for args in (("train",), ("lake", "init"))
            }
            refused = {args: future.result(timeout=330) for args, future in slow.items()}

    for ran in wrong.values():
        assert_one_clear_error(ran, stack.s3_endpoint_url)
    for args, ran in refused.items():
        line = assert_one_clear_error(ran, unreachable)
        seconds = round(ran.seconds, 1)
        record_property(f"unreachable_{'_'.join(args)}_seconds", seconds)
        print(f"\nunreachable endpoint: socialads {' '.join(args)} failed in {seconds}s: {line}")
        assert ran.seconds < UNREACHABLE_BOUND_S, ran.describe()

    assert registry_state(mlflow_client) == registry_before
    s3.invalidate_cache()
    assert {path: s3.cat(path) for path in s3.find(DATA_BUCKET)} == lake_before


# -- 5. deployments served by `socialads deploy` -----------------------------------------------

PREP_SCHEMA = {"test_size": ("number", 0), "random_state": ("integer", 1)}
TRAIN_SCHEMA = {
    "selection_metric": ("string", 0),
    "candidates": ("array", 1),
    "cv_folds": ("integer", 2),
    "dask_address": ("string", 3),
}
PIPELINE_SCHEMA = {
    "test_size": ("number", 0),
    "random_state": ("integer", 1),
    "selection_metric": ("string", 2),
    "candidates": ("array", 3),
    "cv_folds": ("integer", 4),
    "dask_address": ("string", 5),
}
PREP_DEFAULTS = {"test_size": 0.2, "random_state": 42}
TRAIN_DEFAULTS = {"selection_metric": "f1", "candidates": CANDIDATES, "cv_folds": 5}
SCORE_SCHEMA = {
    "input": ("string", 0),
    "output": ("string", 1),
    "alias": ("string", 2),
    "model_version": ("string", 3),
}
MONITOR_SCHEMA = {"since": ("string", 0), "start": ("string", 1), "end": ("string", 2)}
HOURLY = [("0 * * * *", True)]


def schema_view(schema: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """What the UI's run form shows per parameter: its type (each is optional) and position."""
    assert schema["type"] == "object"
    assert not schema.get("required"), "every parameter is optional (empty = the setting)"
    view = {}
    for name, prop in schema["properties"].items():
        types = [option["type"] for option in prop["anyOf"]]
        assert types[1:] == ["null"] and prop["default"] is None, (name, prop)
        if types[0] == "array":  # candidates: a multi-select of the known families
            assert prop["anyOf"][0]["items"]["enum"] == list(CANDIDATE_NAMES)
        if name == "selection_metric":  # a drop-down of the metrics
            assert prop["anyOf"][0]["enum"] == list(get_args(SelectionMetric))
        view[name] = (types[0], prop["position"])
    return view


def test_deploy_shows_the_deployments_with_parameters_and_only_monitor_scheduled(
    served: tuple[Served, dict[str, dict[str, Any]]],
    prefect_api: httpx.Client,
) -> None:
    from socialads import __version__

    _, found = served
    assert sorted(found) == sorted(DEPLOYMENTS)
    expected = {
        "pipeline/socialads": (
            "flows.pipeline.pipeline_flow",
            PIPELINE_SCHEMA,
            PREP_DEFAULTS | TRAIN_DEFAULTS,
        ),
        "data-prep/socialads": ("flows.data_prep.data_prep_flow", PREP_SCHEMA, PREP_DEFAULTS),
        "train/socialads": ("flows.train.train_flow", TRAIN_SCHEMA, TRAIN_DEFAULTS),
        "score/socialads": ("flows.score.score_flow", SCORE_SCHEMA, {}),
        "monitor/socialads": ("flows.monitor.monitor_flow", MONITOR_SCHEMA, {}),
    }
    for name, (entrypoint, schema, defaults) in expected.items():
        deployment = found[name]
        assert deployment["entrypoint"] == entrypoint, name
        assert schema_view(deployment["parameter_openapi_schema"]) == schema, name
        assert deployment["parameters"] == defaults, name
        assert deployment["enforce_parameter_schema"] is True, name
        assert deployment["tags"] == ["socialads"], name
        schedules = [(s["schedule"]["cron"], s["active"]) for s in deployment["schedules"]]
        assert schedules == (HOURLY if name == "monitor/socialads" else []), name
        assert deployment["paused"] is False, name
        assert deployment["status"] == "READY", name
        assert deployment["version"] == __version__, name
        assert deployment["description"], name
        assert deployment["work_pool_name"] is None, name

    # The pipeline deployment's automation: the monitor's drift event, one run per cool-down.
    automations = prefect_api.post("/automations/filter", json={}).raise_for_status().json()
    retrain = [a for a in automations if a["name"] == "socialads-retrain-on-drift"]
    assert len(retrain) == 1, automations
    trigger, actions = retrain[0]["trigger"], retrain[0]["actions"]
    assert trigger["expect"] == ["socialads.model.drift-detected"]
    assert trigger["match"] == {"prefect.resource.id": f"socialads.model.{MODEL}.*"}
    assert (trigger["posture"], trigger["threshold"]) == ("Reactive", 1)
    assert trigger["within"] == 6 * 3600  # SOCIALADS_MONITOR_COOLDOWN's default
    assert [(a["type"], a["deployment_id"]) for a in actions] == [
        ("run-deployment", found["pipeline/socialads"]["id"])
    ]


def test_a_run_of_the_pipeline_deployment_completes_and_gates(
    served: tuple[Served, dict[str, dict[str, Any]]],
    prefect_api: httpx.Client,
    mlflow_client: MlflowClient,
    s3: Any,
) -> None:
    process, found = served
    count_before, champion_before = registry_state(mlflow_client)
    started = datetime.now(UTC).replace(microsecond=0)

    created = (
        prefect_api.post(
            f"/deployments/{found['pipeline/socialads']['id']}/create_flow_run",
            json={"parameters": {"candidates": ["gaussian_nb"]}},
        )
        .raise_for_status()
        .json()
    )
    assert created["parameters"] == PREP_DEFAULTS | TRAIN_DEFAULTS | {"candidates": ["gaussian_nb"]}
    run_id = created["id"]

    def finished() -> dict[str, Any] | None:
        run = prefect_api.get(f"/flow_runs/{run_id}").raise_for_status().json()
        return run if run["state"]["type"] in TERMINAL else None

    run = wait_for(
        "the pipeline flow run to finish",
        finished,
        FLOW_RUN_TIMEOUT_S,
        2.0,
        on_timeout=process.output,
    )
    assert run["state"]["type"] == "COMPLETED", (
        f"{run['state']['type']}: {run['state'].get('message')}\n{process.output()}"
    )

    # Subflows ran in the served process's child, with the inherited environment: the lake
    # (S3 credentials, SOCIALADS_LAKE_URL) and the registry (MLFLOW_TRACKING_URI) changed.
    subflows = (
        prefect_api.post(
            "/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}
        )
        .raise_for_status()
        .json()
    )
    flow_names = {f["id"]: f["name"] for f in prefect_api.post("/flows/filter", json={}).json()}
    assert sorted((flow_names[s["flow_id"]], s["state"]["type"]) for s in subflows) == [
        ("data-prep", "COMPLETED"),
        ("train", "COMPLETED"),
    ]
    manifest = json.loads(s3.cat(f"{DATA_BUCKET}/{MANIFEST_KEY}"))
    assert datetime.fromisoformat(manifest["created_at"]) >= started

    count, champion = registry_state(mlflow_client)
    assert count == count_before + 1
    versions = mlflow_client.search_model_versions(f"name='{MODEL}'")
    newest = max(versions, key=lambda v: int(v.version))
    decision = newest.tags["promotion.decision"]
    assert decision in {"champion", "challenger"}
    assert newest.tags["promotion.reason"]
    assert mlflow_client.get_run(newest.run_id).data.params["candidates"] == "gaussian_nb"
    if decision == "champion":
        assert champion == newest.version
    else:
        assert champion == champion_before
        challenger = mlflow_client.get_model_version_by_alias(MODEL, "challenger")
        assert challenger.version == newest.version

    # The leaderboard artifact and the logs, as the flow run's page shows them.
    run_ids = [run_id, *(s["id"] for s in subflows)]
    artifacts = prefect_api.post(
        "/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["leaderboard"]}, "flow_run_id": {"any_": run_ids}}},
    ).json()
    assert len(artifacts) == 1, artifacts
    assert artifacts[0]["type"] == "markdown"
    assert artifacts[0]["data"].startswith("# Training leaderboard")
    assert "gaussian_nb" in artifacts[0]["data"]
    assert f"version {newest.version}" in artifacts[0]["data"]

    def logged() -> list[str] | None:
        logs = prefect_api.post(
            "/logs/filter", json={"logs": {"flow_run_id": {"any_": run_ids}}, "limit": 200}
        ).json()
        messages = [entry["message"] for entry in logs]
        wanted = (
            "Beginning flow run",
            "data-prep validate: done (400 rows)",
            f"version {newest.version}",
        )
        return messages if all(any(w in m for m in messages) for w in wanted) else None

    messages = wait_for("the flow run's logs", logged, timeout=30, on_timeout=process.output)
    assert any(m.startswith("search gaussian_nb: done (cv f1") for m in messages), messages


def test_a_run_of_the_score_deployment_scores_incoming_files_into_scores(
    served: tuple[Served, dict[str, dict[str, Any]]],
    prefect_api: httpx.Client,
    s3: Any,
) -> None:
    """The champion exists (the pipeline run above); a file dropped under incoming/ is
    scored into scores/ by a run with no parameters, which publishes its summary."""
    import pandas as pd

    process, found = served
    s3.pipe(f"{DATA_BUCKET}/incoming/users.csv", bundled_dataset())
    created = (
        prefect_api.post(f"/deployments/{found['score/socialads']['id']}/create_flow_run", json={})
        .raise_for_status()
        .json()
    )
    run_id = created["id"]

    def finished() -> dict[str, Any] | None:
        run = prefect_api.get(f"/flow_runs/{run_id}").raise_for_status().json()
        return run if run["state"]["type"] in TERMINAL else None

    run = wait_for(
        "the score flow run to finish", finished, FLOW_RUN_TIMEOUT_S, 2.0, on_timeout=process.output
    )
    assert run["state"]["type"] == "COMPLETED", (
        f"{run['state']['type']}: {run['state'].get('message')}\n{process.output()}"
    )
    with s3.open(f"{DATA_BUCKET}/scores/users.parquet", "rb") as handle:
        scores = pd.read_parquet(handle)
    assert len(scores) == 400 and set(scores["label"]) <= {"COMPRA", "NO COMPRA"}
    query = {"artifacts": {"key": {"any_": ["score-summary"]}}}
    artifacts = prefect_api.post("/artifacts/filter", json=query).raise_for_status().json()
    assert any(a["flow_run_id"] == run_id and "users.parquet" in a["data"] for a in artifacts)


def test_stopping_deploy_pauses_and_cron_deploy_schedules_the_pipeline(
    served: tuple[Served, dict[str, dict[str, Any]]],
    prefect_api: httpx.Client,
    home: Path,
    cli_env: dict[str, str],
) -> None:
    process, _ = served
    stopped = process.stop()
    assert stopped["graceful"] and stopped["returncode"] == 0, (stopped, process.output())
    assert all(d["paused"] for d in deployments(prefect_api).values())

    cron = start_deploy(home, cli_env, "deploy-cron", "--cron", "0 3 * * *")
    try:
        found = wait_served(
            prefect_api,
            cron,
            lambda d: (
                not d["paused"]
                and (d["entrypoint"] != "flows.pipeline.pipeline_flow" or bool(d["schedules"]))
            ),
            "the cron schedule on the pipeline deployment",
        )
    finally:
        stopped = cron.stop()
    assert stopped["graceful"], (stopped, cron.output())
    schedules = found["pipeline/socialads"]["schedules"]
    assert [(s["schedule"]["cron"], s["active"]) for s in schedules] == [("0 3 * * *", True)]
    assert found["data-prep/socialads"]["schedules"] == []
    assert found["train/socialads"]["schedules"] == []
    monitor = found["monitor/socialads"]["schedules"]
    assert [(s["schedule"]["cron"], s["active"]) for s in monitor] == HOURLY


# -- 6. work pools (last: it moves the deployments from the served process to the pool) -------


def test_deploy_on_a_process_pool_and_a_real_worker_runs_the_pipeline(
    cli: Callable[..., Ran],
    prefect_api: httpx.Client,
    mlflow_client: MlflowClient,
    home: Path,
    cli_env: dict[str, str],
) -> None:
    pool = f"socialads-it-{os.getpid()}"
    registered = cli("deploy", "--pool", pool, timeout=180)
    assert registered.returncode == 0, registered.describe()
    assert f"created the process work pool {pool!r}" in registered.stderr
    assert f"prefect worker start --pool {pool}" in registered.stderr
    found = deployments(prefect_api)
    assert {n: (d["work_pool_name"], d["paused"]) for n, d in found.items()} == {
        n: (pool, False) for n in DEPLOYMENTS
    }
    again = cli("deploy", "--pool", pool, timeout=180)
    assert again.returncode == 0, again.describe()
    assert f"using the process work pool {pool!r}" in again.stderr
    wrong = cli("deploy", "--pool", pool, "--image", "socialads:latest", timeout=180)
    assert wrong.returncode == 2 and "runs no images" in wrong.stderr, wrong.describe()

    count_before, _ = registry_state(mlflow_client)
    created = (
        prefect_api.post(
            f"/deployments/{found['pipeline/socialads']['id']}/create_flow_run",
            json={"parameters": {"candidates": ["gaussian_nb"]}},
        )
        .raise_for_status()
        .json()
    )
    worker_log = home / "worker.log"
    with worker_log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(CLI[0]).parent / "prefect"), "worker", "start", "--pool", pool],
            env=cli_env | {"PREFECT_WORKER_QUERY_SECONDS": "1"},
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    worker = Served(process, worker_log)
    try:

        def finished() -> dict[str, Any] | None:
            run = prefect_api.get(f"/flow_runs/{created['id']}").raise_for_status().json()
            return run if run["state"]["type"] in TERMINAL else None

        run = wait_for(
            "the worker to run the pipeline", finished, FLOW_RUN_TIMEOUT_S, 2.0, worker.output
        )
    finally:
        stopped = worker.stop()
    assert run["state"]["type"] == "COMPLETED", (run["state"], worker.output())
    assert run["work_pool_name"] == pool
    workers = prefect_api.post(f"/work_pools/{pool}/workers/filter", json={}).json()
    assert len(workers) == 1, workers
    assert registry_state(mlflow_client)[0] == count_before + 1
    assert stopped["graceful"], (stopped, worker.output())
