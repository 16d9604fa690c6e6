"""The native stack (socialads.local.stack, scripts/stack.py): S3 with credentials, MLflow on S3,
Prefect, clean down."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from socialads.local.stack import (
    COMPOSE_MLFLOW_HOSTS,
    Stack,
    StackConfig,
    database_exists,
    free_base_port,
)
from socialads.local.supervisor import group_members, port_free

if TYPE_CHECKING:
    from conftest import StackHandle

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stack.py"


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- S3 ----------------------------------------------------------------------------------------


def test_s3_rejects_a_wrong_secret(stack: StackHandle) -> None:
    bucket = f"it-wrong-{secrets.token_hex(4)}"
    fs = stack.s3fs(secret="not-the-secret")
    with pytest.raises(PermissionError):
        fs.ls("")
    with pytest.raises(PermissionError):
        fs.mkdir(bucket)
    assert bucket not in {b.rstrip("/") for b in stack.s3fs().ls("")}


def test_s3_right_secret_creates_a_bucket_and_round_trips(stack: StackHandle) -> None:
    fs = stack.s3fs()
    bucket = f"it-ok-{secrets.token_hex(4)}"
    fs.mkdir(bucket)
    try:
        fs.pipe(f"{bucket}/a/b.txt", b"hello")
        assert fs.cat(f"{bucket}/a/b.txt") == b"hello"
        assert bucket in fs.ls("")
        assert "mlflow" in fs.ls(""), "the launcher creates the artifacts bucket"
    finally:
        fs.rm(bucket, recursive=True)


def _s3fs(env: dict[str, str]) -> Any:
    import s3fs

    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": env["SOCIALADS_S3_ENDPOINT_URL"]},
        skip_instance_cache=True,
        use_listings_cache=False,
    )


@pytest.mark.slow
def test_s3_keeps_data_on_disk_across_restarts(tmp_path: Path) -> None:
    cfg = StackConfig.from_env(os.environ, tmp_path / "s3only", free_base_port())
    launcher = Stack(cfg)
    env = launcher.up(("s3",))
    try:
        _s3fs(env).pipe("mlflow/persist/me.txt", b"still here")
    finally:
        launcher.down()
    assert launcher.read_state()["services"] == {}
    assert list(cfg.s3_data_dir.glob("*.dat")), "volumes are files under the state dir"
    launcher.up(("s3",))
    try:
        assert _s3fs(env).cat("mlflow/persist/me.txt") == b"still here"
    finally:
        launcher.down()


# -- MLflow ------------------------------------------------------------------------------------


def test_mlflow_health_and_allowed_hosts(stack: StackHandle) -> None:
    assert _get(f"{stack.mlflow_url}/health")[0] == 200
    api = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    port = stack.mlflow_port
    # Loopback, and the compose service's address (the app containers' Host header).
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", *COMPOSE_MLFLOW_HOSTS):
        assert _get(api, host)[0] == 200, host
    status, body = _get(api, f"evil.example:{port}")
    assert status == 403, body


def test_mlflow_artifact_lands_in_the_s3_bucket(stack_env: StackHandle) -> None:
    import mlflow

    assert mlflow.get_tracking_uri() == stack_env.mlflow_url
    experiment_id = mlflow.create_experiment(f"it-stack-{secrets.token_hex(4)}")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("hello artifacts", "notes/hello.txt")
    run_id = run.info.run_id
    fs = stack_env.s3fs()
    keys = [k for k in fs.find(f"mlflow/{experiment_id}") if k.endswith("notes/hello.txt")]
    assert keys == [f"mlflow/{experiment_id}/{run_id}/artifacts/notes/hello.txt"]
    assert fs.cat(keys[0]) == b"hello artifacts"
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/hello.txt") == "hello artifacts"


# -- Prefect -----------------------------------------------------------------------------------


def test_prefect_health_and_a_flow_run_on_the_server(stack_env: StackHandle) -> None:
    status, body = _get(f"{stack_env.prefect_api_url}/health")
    assert (status, body.strip()) == (200, b"true")

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    name = f"it-stack-{secrets.token_hex(4)}"

    @flow(name=name, persist_result=False)
    def smoke() -> int:
        return 42

    state = smoke(return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == stack_env.prefect_api_url
        flows = client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
        assert [f.name for f in flows] == [name]
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
        assert [r.id for r in runs] == [state.state_details.flow_run_id]
        assert runs[0].state is not None and runs[0].state.is_completed()


# -- the CLI, end to end -----------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_cli_up_status_env_down_leaves_nothing_behind(tmp_path: Path) -> None:
    base = free_base_port()
    prefix = f"it_cli_{os.getpid()}_{secrets.token_hex(3)}_"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALADS_STACK_")}
    env["SOCIALADS_STACK_PREFECT_UI"] = "0"
    state_dir = tmp_path / "cli-stack"
    common = ["--dir", str(state_dir)]
    pids: dict[str, int] = {}
    up = _cli("up", *common, "--base-port", str(base), "--db-prefix", prefix, env=env)
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((state_dir / "state.json").read_text())
        pids = {name: rec["pid"] for name, rec in state["services"].items()}
        assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{base + 1}" in up.stdout
        assert up.stderr.count("healthy in") == 3
        status = _cli("status", *common, env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("healthy") == 3
        assert _cli("env", *common, env=env).stdout == up.stdout
        assert sorted(pids) == ["mlflow", "prefect", "s3"]
        # mlflow server runs uvicorn as a child: down must stop whole process groups.
        assert len(group_members(pids["mlflow"])) >= 2
    finally:
        down = _cli("down", *common, "--drop-dbs", env=env)
    assert down.returncode == 0, down.stderr
    left = {name: group_members(pid) for name, pid in pids.items()}
    assert not any(left.values()), left
    busy = [p for p in state["ports"].values() if not port_free("127.0.0.1", p)]
    assert not busy, f"ports still bound: {busy}"
    for name in state["databases"]:
        assert not database_exists(state["pg_dsn"], name)
    after = _cli("status", *common, env=env)
    assert after.returncode == 1
    assert after.stdout.count(" down ") == 3
