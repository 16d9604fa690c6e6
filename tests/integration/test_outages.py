"""Outages in the middle of the work, against the real stack.

S3 vanishes while data-prep writes the lake, or while the MLflow server stores the trained
model; the MLflow server is down when the model service starts, and again while the
champion alias moves. The outages are real: S3 is reached through a relay
(:mod:`faultproxy`) that stops listening the moment a chosen request goes by, and the MLflow
server that goes down is a second `mlflow server` on the stack's database and bucket,
started and stopped by the test (socialads.local.stack with its own state directory).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from test_pipeline_stack import wait_for
from test_serve import BUYER, START_TIMEOUT, Hammer, Server, free_port, launch
from testkit import Ran, environ_without_tools, run_cli

from socialads.local.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAMILY = "gaussian_nb"  # the quickest candidate: these tests are about the outage, not the search
OUTAGE_BOUND_S = 120.0  # a run that meets a dead server must give up within this
RECOVERY_TIMEOUT_S = 120.0


@dataclass
class Setup:
    """A lake bucket, an experiment and a model of this module only, trained once."""

    home: Path
    env: dict[str, str]
    model: str
    experiment: str
    bucket: str
    client: Any
    champion: str

    def registry(self) -> tuple[int, str | None]:
        """(number of versions, champion version) as the stack's MLflow server has them."""
        versions = self.client.search_model_versions(f"name='{self.model}'")
        aliases = self.client.get_registered_model(self.model).aliases
        return len(versions), aliases.get("champion")

    def cli(self, *args: str, **env: str) -> Ran:
        """Run socialads with this module's environment (plus ``env``)."""
        return run_cli(self.home, self.env | env, *args, timeout=600)


def one_clear_error(ran: Ran, *words: str) -> str:
    """The run failed with exactly one ``error:`` line containing ``words``, no traceback."""
    assert ran.returncode != 0, ran.describe()
    assert len(ran.error_lines) == 1, ran.describe()
    line = ran.error_lines[0]
    for word in words:
        assert word in line, ran.describe()
    assert "Traceback" not in ran.stdout + ran.stderr, ran.describe()
    return line


@pytest.fixture(scope="module")
def relay(stack: Any) -> Iterator[FaultProxy]:
    """The stack's S3 behind a relay that can be cut."""
    proxy = FaultProxy(stack.s3_port).start()
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def mlflow_server(
    stack: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Stack]]:
    """``start(port, s3_port=...)``: another MLflow server on the stack's database and bucket
    (artifacts reached through ``s3_port``); call ``.down()`` on what it returns to stop it."""
    started: list[Stack] = []

    def start(port: int, s3_port: int | None = None) -> Stack:
        base = stack.launcher.cfg
        cfg = dataclasses.replace(
            base,
            state_dir=tmp_path_factory.mktemp("mlflow-server"),
            ports=dataclasses.replace(base.ports, mlflow=port, s3=s3_port or base.ports.s3),
            drop_dbs=False,
        )
        launcher = Stack(cfg)
        started.append(launcher)
        launcher.up(("mlflow",))
        return launcher

    yield start
    for launcher in started:
        launcher.down()


@pytest.fixture(scope="module")
def setup(stack: Any, relay: FaultProxy, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """`lake init` and one successful `socialads train`, with the lake behind the relay."""
    from mlflow import MlflowClient

    tag = uuid.uuid4().hex[:8]
    home = tmp_path_factory.mktemp("outage-home")
    bucket = f"outage-{tag}"
    env = (
        environ_without_tools()
        | stack.env
        | {
            "SOCIALADS_HOME": str(home),
            "SOCIALADS_LAKE_URL": f"s3://{bucket}",
            "SOCIALADS_S3_ENDPOINT_URL": relay.url,
            "SOCIALADS_MODEL_NAME": f"OutageModel{tag}",
            "SOCIALADS_EXPERIMENT_NAME": f"Outage_{tag}",
            "SOCIALADS_CANDIDATES": FAMILY,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    for args in (("lake", "init"), ("train",)):
        ran = run_cli(home, env, *args)
        assert ran.returncode == 0, ran.describe()
    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    made = Setup(home, env, f"OutageModel{tag}", f"Outage_{tag}", bucket, client, champion="1")
    assert made.registry() == (1, "1")  # one version, and it is the champion
    return made


# -- S3 --------------------------------------------------------------------------------------------


def test_s3_vanishing_while_data_prep_writes_leaves_the_previous_run_in_use(
    setup: Setup, relay: FaultProxy, stack: Any, record_property: Callable[[str, object], None]
) -> None:
    """S3 goes away after the new run's train split is written and before its test split is:
    the run fails naming the endpoint, the registry is untouched, the manifest still points
    at the previous complete run, and a training afterwards (the train flow alone, no
    data-prep) reads that run: its MLflow run records the previous run's id and hashes."""
    from socialads.data.lake import MANIFEST_KEY, PROCESSED
    from socialads.data.processed import Manifest

    s3 = stack.s3fs()
    pointer = f"{setup.bucket}/{MANIFEST_KEY}"
    pointer_before = s3.cat(pointer)
    previous = Manifest.from_json(pointer_before)
    registry_before = setup.registry()

    relay.cut_on(re.compile(rf"PUT /{setup.bucket}/{PROCESSED}/[^/ ]+/test\.csv".encode()))
    try:
        ran = setup.cli("train", "--random-state", "7")  # a different split: new bytes
        cut = relay.tripped.is_set()
    finally:
        relay.restore()

    assert cut, f"the run never tried to write its test split:\n{ran.describe()}"
    line = one_clear_error(ran, f"endpoint {relay.url}")
    record_property("s3_cut_mid_prep_seconds", round(ran.seconds, 1))
    print(f"\nS3 cut during data-prep: failed in {ran.seconds:.1f}s: {line}")
    assert ran.seconds < OUTAGE_BOUND_S, ran.describe()
    assert setup.registry() == registry_before

    assert s3.cat(pointer) == pointer_before
    runs = sorted(p.rsplit("/", 1)[-1] for p in s3.ls(f"{setup.bucket}/{PROCESSED}", detail=False))
    dead = [run for run in runs if run not in (previous.run_id, "manifest.json")]
    assert len(dead) == 1, runs
    left = sorted(p.rsplit("/", 1)[-1] for p in s3.ls(f"{setup.bucket}/{PROCESSED}/{dead[0]}"))
    assert left == ["train.csv"], "the cut came after the train split and before the test split"

    # A training afterwards: the train flow alone, so nothing rewrites the lake first.
    train_only = (
        "import json; from flows.train import train_flow; "
        "print(json.dumps(train_flow(), default=str))"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", train_only],
        env=setup.env | {"SOCIALADS_S3_ENDPOINT_URL": stack.s3_endpoint_url},
        cwd=setup.home,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    params = setup.client.get_run(report["run_id"]).data.params
    assert params["processed_run"] == previous.run_id
    assert params["dataset_sha256"] == previous.raw_sha256
    assert (int(params["train_rows"]), int(params["random_state"])) == (
        previous.train_rows,
        previous.random_state,
    )
    print(f"train flow on the previous run: {time.perf_counter() - started:.1f}s")
    # The same family on the same split scores the same: the gate keeps the champion.
    assert setup.registry() == (registry_before[0] + 1, setup.champion)


def test_s3_vanishing_while_mlflow_stores_the_model_keeps_the_champion(
    setup: Setup,
    relay: FaultProxy,
    mlflow_server: Callable[..., Any],
    record_property: Callable[[str, object], None],
) -> None:
    """The MLflow server's artifact store (S3) goes away at its first upload of the run: the
    run fails naming the MLflow server, no version is registered, the champion stays and the
    training run is marked FAILED in MLflow."""
    port = free_port()
    server = mlflow_server(port, s3_port=relay.port)
    url = f"http://127.0.0.1:{port}"
    registry_before = setup.registry()
    started_ms = int(time.time() * 1000)

    relay.cut_on(f"PUT /{server.cfg.artifacts_bucket}/".encode())
    try:
        ran = setup.cli("train", MLFLOW_TRACKING_URI=url)
        cut = relay.tripped.is_set()
    finally:
        relay.restore()

    assert cut, f"the run never uploaded an artifact:\n{ran.describe()}"
    line = one_clear_error(ran, f"MLflow at {url}", "check its artifact store")
    record_property("s3_cut_mid_model_upload_seconds", round(ran.seconds, 1))
    print(f"\nS3 cut while MLflow stored the model: failed in {ran.seconds:.1f}s: {line}")
    assert ran.seconds < OUTAGE_BOUND_S, ran.describe()
    assert setup.registry() == registry_before

    experiment = setup.client.get_experiment_by_name(setup.experiment)
    runs = setup.client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`socialads.kind` = 'training' and attributes.start_time >= {started_ms}"
        ),
    )
    assert [run.info.status for run in runs] == ["FAILED"]


# -- MLflow and the model service -----------------------------------------------------------------


@pytest.fixture
def serve(setup: Setup, tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    """``serve(tracking_uri)``: `socialads serve` on a free port, polling every second."""
    servers: list[Server] = []

    def start(tracking_uri: str) -> Server:
        env = environ_without_tools() | {
            "SOCIALADS_HOME": str(tmp_path / "serve-home"),
            "MLFLOW_TRACKING_URI": tracking_uri,
            "SOCIALADS_MODEL_NAME": setup.model,
            "SOCIALADS_RELOAD_INTERVAL": "1",
            "PYTHONUNBUFFERED": "1",
        }
        servers.append(launch(env, tmp_path))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def hammers() -> Iterator[Callable[[str, int], list[Hammer]]]:
    """``hammers(url, n)``: n threads POSTing /predict until the test ends (or ``stop``)."""
    started: list[Hammer] = []

    def start(url: str, n: int) -> list[Hammer]:
        batch = [Hammer(url) for _ in range(n)]
        for hammer in batch:
            hammer.start()
        started.extend(batch)
        return batch

    yield start
    stop(started)


def stop(hammers: list[Hammer]) -> None:
    """Stop the hammers and wait for their last requests."""
    for hammer in hammers:
        hammer.stop.set()
    for hammer in hammers:
        hammer.join(timeout=30)


def test_model_service_rides_out_mlflow_outages(
    setup: Setup,
    stack: Any,
    mlflow_server: Callable[..., Any],
    serve: Callable[[str], Server],
    hammers: Callable[[str, int], list[Hammer]],
    record_property: Callable[[str, object], None],
) -> None:
    """MLflow down when the API starts: /health 200, /ready 503, ready by itself once MLflow
    is back. MLflow down while the alias moves: reloads fail with 502, the old model keeps
    answering every request; MLflow back: the new champion is served by itself."""
    import mlflow

    port = free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}"
    server = serve(url)

    # 1. MLflow down at start.
    server.wait_for("/health", 200, timeout=START_TIMEOUT)
    not_ready = wait_for(
        "/ready to name the unreachable MLflow server",
        lambda: (r := server.get("/ready")).status_code == 503 and url in r.text and r,
        timeout=START_TIMEOUT,
        on_timeout=server.output,
    )
    print(f"\nMLflow down at start: /ready 503: {not_ready.json()['reason']}")
    assert server.http.post("/predict", json=BUYER).status_code == 503
    registry_server = mlflow_server(port)
    back = time.monotonic()
    ready = server.wait_for("/ready", 200, timeout=RECOVERY_TIMEOUT_S)
    seconds = round(time.monotonic() - back, 1)
    record_property("ready_after_mlflow_back_seconds", seconds)
    print(f"MLflow back: /ready 200 after {seconds} s")
    assert ready.json()["model_version"] == setup.champion

    # 2. MLflow down while the champion alias moves.
    load = hammers(server.url, 2)
    registry_server.down()
    current = setup.client.get_model_version(setup.model, setup.champion)
    with stack.activate():  # the same artifacts registered again: a new version number
        new = str(mlflow.register_model(current.source, setup.model).version)
    assert new != setup.champion
    setup.client.set_registered_model_alias(setup.model, "champion", new)
    asked = time.monotonic()
    reload = server.http.post("/admin/reload", timeout=120)
    assert reload.status_code == 502, reload.text
    print(f"MLflow down: /admin/reload {reload.status_code} in {time.monotonic() - asked:.1f} s")
    assert url in reload.json()["detail"] and setup.champion in reload.json()["detail"]
    time.sleep(5)  # several poll intervals against the dead server
    assert server.get("/ready").json() == {"status": "ready", "model_version": setup.champion}
    assert {h.versions[-1] for h in load if h.versions} == {setup.champion}

    # 3. MLflow back: the new champion is picked up by itself.
    mlflow_server(port)
    back = time.monotonic()
    wait_for(
        f"version {new} to be served",
        lambda: server.get("/model").json()["version"] == new,
        timeout=RECOVERY_TIMEOUT_S,
        interval=0.2,
        on_timeout=server.output,
    )
    seconds = round(time.monotonic() - back, 1)
    record_property("reload_after_mlflow_back_seconds", seconds)
    print(f"MLflow back: version {new} served after {seconds} s")
    time.sleep(1.0)
    stop(load)

    answered = sum(len(h.versions) for h in load)
    print(f"{answered} predictions through the outage and the reload")
    for hammer in load:
        assert hammer.failures == []
        assert set(hammer.versions) == {setup.champion, new}
        switch = hammer.versions.index(new)
        assert set(hammer.versions[switch:]) == {new}, "went back to the old version"
