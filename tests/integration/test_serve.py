"""`socialads serve` for real: uvicorn subprocesses against an MLflow registry (SQLite store).

The registry is the embedded default under a temporary SOCIALADS_HOME; versions are logged
and registered directly with MLflow (no Prefect, no training flow). Covered: readiness,
the contract, hot reload when the champion alias moves under load (zero failed requests),
start without a champion (not ready, then ready by itself), the fail-fast starts, and two
workers sharing one /metrics.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from testkit import environ_without_tools

pytestmark = pytest.mark.integration

BUYER = {"Gender": "Female", "Age": 45, "EstimatedSalary": 90000}
MODEL = "ServeTestModel"
LATE_MODEL = "ServeTestLateModel"
START_TIMEOUT = 180.0  # imports and the first MLflow load are slow on a busy 2-core machine
SWAP_TIMEOUT = 30.0


# -- the registry -------------------------------------------------------------------------------
@dataclass
class Registry:
    """A local MLflow store with two logged pipelines (not registered yet): the logistic
    regression with its ONNX graph, as training logs it; the naive Bayes without, as a model
    logged before the conversion existed."""

    home: Path
    settings: Any
    client: Any
    model_uris: dict[str, str]

    def register(self, model_name: str, family: str) -> str:
        """Register the logged pipeline of ``family`` under ``model_name``; its version."""
        from socialads.models.registry import register_version
        from socialads.models.tracking import LoggedModel

        model_id = self.model_uris[family].removeprefix("models:/")
        run_id = self.client.get_logged_model(model_id).source_run_id
        return register_version(
            self.client,
            self.settings.model_copy(update={"model_name": model_name}),
            LoggedModel(uri=self.model_uris[family], model_id=model_id),
            run_id,
        )

    def set_champion(self, model_name: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, "champion", version)


@pytest.fixture(scope="module")
def registry(raw_bytes: bytes, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    import mlflow
    import pandas as pd

    from socialads.data.schema import FEATURES, TARGET
    from socialads.features.preprocessing import build_pipeline
    from socialads.models import onnx_export, tracking
    from socialads.models.candidates import CANDIDATES
    from socialads.settings import Settings

    home = tmp_path_factory.mktemp("serve-home")
    settings = Settings(SOCIALADS_HOME=str(home), SOCIALADS_TRACKING_URI=None)
    client = tracking.connect(settings)
    experiment_id = tracking.ensure_experiment(client, settings)
    frame = pd.read_csv(BytesIO(raw_bytes))
    uris: dict[str, str] = {}
    for family in ("logistic_regression", "gaussian_nb"):
        pipeline = build_pipeline(CANDIDATES[family].factory(0))
        pipeline.fit(frame[list(FEATURES)], frame[TARGET])
        extra_files = None
        if family == "logistic_regression":
            graph = home / onnx_export.ONNX_FILE
            graph.write_bytes(onnx_export.convert(pipeline))
            extra_files = [str(graph)]
        with (
            tracking.global_tracking_uri(settings.mlflow_uri),
            mlflow.start_run(experiment_id=experiment_id, run_name=family),
        ):
            mlflow.log_metric("holdout_f1", 0.9 if family == "gaussian_nb" else 0.8)
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                serialization_format="skops",
                skops_trusted_types=list(tracking.SKOPS_TRUSTED_TYPES),
                pip_requirements=tracking.model_requirements(),
                extra_files=extra_files,
            )
        uris[family] = info.model_uri
    return Registry(home, settings, client, uris)


@pytest.fixture(scope="module")
def champion_versions(registry: Registry) -> dict[str, str]:
    """MODEL with two versions; the champion alias on the logistic regression."""
    versions = {f: registry.register(MODEL, f) for f in ("logistic_regression", "gaussian_nb")}
    registry.set_champion(MODEL, versions["logistic_regression"])
    return versions


# -- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command() -> list[str]:
    script = Path(sys.executable).with_name("socialads")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-c", "from socialads.cli import main; main()", "serve"]


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    log: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=10.0)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the server (kill it after 30 s)."""
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait_for(self, path: str, status: int, timeout: float = START_TIMEOUT) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                response = self.get(path)
                if response.status_code == status:
                    return response
                last = response.text
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.2)
        pytest.fail(f"{path} never answered {status} (last: {last}):\n{self.output()}")


def launch(env: dict[str, str], workdir: Path, *options: str) -> Server:
    """`socialads serve` on a free port with exactly ``env``, its output in ``workdir``."""
    port = free_port()
    log = workdir / f"serve-{port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*serve_command(), "--port", str(port), *options],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=workdir,
            start_new_session=True,
        )
    return Server(process, f"http://127.0.0.1:{port}", log)


@pytest.fixture
def start_server(registry: Registry, tmp_path: Path) -> Iterator[Any]:
    """Start `socialads serve` with extra variables/options; everything stops at teardown."""
    started: list[Server] = []

    def start(*options: str, **variables: str) -> Server:
        env = environ_without_tools() | {
            "SOCIALADS_HOME": str(registry.home),
            "SOCIALADS_MODEL_NAME": MODEL,
            "SOCIALADS_RELOAD_INTERVAL": "1",
            "PYTHONUNBUFFERED": "1",
        }
        started.append(launch(env | variables, tmp_path, *options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus samples by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- tests ----------------------------------------------------------------------------------------
class Hammer(threading.Thread):
    """Keeps POSTing /predict on one keep-alive connection; records every outcome."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.versions: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as http:
            while not self.stop.is_set():
                try:
                    response = http.post("/predict", json=BUYER)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                    continue
                self.versions.append(response.json()["model_version"])


def test_serves_the_champion_and_follows_the_alias_under_load(
    registry: Registry, champion_versions: dict[str, str], start_server: Any
) -> None:
    v1, v2 = champion_versions["logistic_regression"], champion_versions["gaussian_nb"]
    registry.set_champion(MODEL, v1)
    server = start_server()
    assert server.wait_for("/ready", 200).json() == {"status": "ready", "model_version": v1}
    answer = server.http.post("/predict", json=BUYER).json()
    assert answer["prediction"] == 1
    assert answer["label"] == "COMPRA"
    assert answer["model_version"] == v1
    info = server.get("/model").json()
    assert (info["engine"], info["estimator"]) == ("onnxruntime", "LogisticRegression")

    hammers = [Hammer(server.url) for _ in range(3)]
    for hammer in hammers:
        hammer.start()
    time.sleep(1.0)
    moved = time.monotonic()
    registry.set_champion(MODEL, v2)
    deadline = moved + SWAP_TIMEOUT
    while server.get("/model").json()["version"] != v2:
        assert time.monotonic() < deadline, f"still on {v1} after {SWAP_TIMEOUT} s"
        time.sleep(0.1)
    swap_seconds = time.monotonic() - moved
    time.sleep(1.0)
    for hammer in hammers:
        hammer.stop.set()
    for hammer in hammers:
        hammer.join(timeout=30)

    for hammer in hammers:
        assert hammer.failures == []
        assert hammer.versions[0] == v1 and hammer.versions[-1] == v2
        switch = hammer.versions.index(v2)
        assert set(hammer.versions[switch:]) == {v2}, "went back to the old version"
    # The new version has no ONNX graph: its scikit-learn Pipeline serves, saying why.
    info = server.get("/model").json()
    assert (info["version"], info["engine"], info["estimator"]) == (v2, "sklearn", "GaussianNB")
    assert "no ONNX graph" in info["engine_reason"]
    assert info["metrics"]["holdout_f1"] == 0.9
    metrics = samples(server.get("/metrics").text)
    assert metrics[("socialads_model_version", ())] == float(v2)
    engine_label = ("alias", "champion"), ("engine", "sklearn"), ("name", MODEL), ("version", v2)
    assert metrics[("socialads_model_info", engine_label)] == 1
    assert metrics[("socialads_model_reloads_total", (("outcome", "loaded"),))] == 2
    print(f"alias moved → /model reported version {v2} after {swap_seconds:.1f} s")


def test_starts_without_a_champion_and_becomes_ready_by_itself(
    registry: Registry, start_server: Any
) -> None:
    server = start_server(SOCIALADS_MODEL_NAME=LATE_MODEL)
    not_ready = server.wait_for("/ready", 503)
    assert server.get("/health").status_code == 200
    wait_reason = time.monotonic() + 60
    while "champion" not in not_ready.json()["reason"] and time.monotonic() < wait_reason:
        time.sleep(0.2)
        not_ready = server.get("/ready")
    assert "champion" in not_ready.json()["reason"]
    assert server.http.post("/predict", json=BUYER).status_code == 503

    version = registry.register(LATE_MODEL, "gaussian_nb")
    registry.set_champion(LATE_MODEL, version)
    ready = server.wait_for("/ready", 200, timeout=SWAP_TIMEOUT)
    assert ready.json()["model_version"] == version
    assert server.http.post("/predict", json=BUYER).json()["model_version"] == version


def test_fail_fast_starts(registry: Registry, start_server: Any) -> None:
    """Unusable settings, or no model when one is required: non-zero exit, named cause."""
    cases = [
        (
            {"SOCIALADS_MODEL_NAME": "NeverTrained", "SOCIALADS_REQUIRE_MODEL_AT_START": "true"},
            3,
            "no 'champion' model of 'NeverTrained'",
        ),
        ({"SOCIALADS_API_KEY": "   "}, 2, "SOCIALADS_API_KEY is set but empty"),
        ({"SOCIALADS_RELOAD_INTERVAL": "-1"}, 2, "SOCIALADS_RELOAD_INTERVAL"),
    ]
    servers = [(start_server(**variables), code, words) for variables, code, words in cases]
    for server, code, words in servers:
        assert server.process.wait(timeout=START_TIMEOUT) == code, server.output()
        assert words in server.output()


def test_two_workers_share_one_metrics_endpoint(
    champion_versions: dict[str, str], registry: Registry, start_server: Any
) -> None:
    registry.set_champion(MODEL, champion_versions["logistic_regression"])
    server = start_server("--workers", "2", "--reload-interval", "0.5")
    server.wait_for("/ready", 200)
    deadline = time.monotonic() + START_TIMEOUT
    n = 40
    for _ in range(n):  # fresh connections spread over both workers
        while True:
            response = httpx.post(f"{server.url}/predict", json=BUYER, timeout=10)
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the other worker may still be loading
        assert response.status_code == 200
    key = (
        "socialads_http_requests_total",
        (("method", "POST"), ("route", "/predict"), ("status", "200")),
    )
    deadline = time.monotonic() + 10
    while (metrics := samples(server.get("/metrics").text)).get(key) != n:
        assert time.monotonic() < deadline, metrics.get(key)  # summed over both workers
        time.sleep(0.2)
    deadline = time.monotonic() + START_TIMEOUT
    while True:  # each worker loaded its own copy and reports it under its pid
        ready = [
            v
            for (name, _), v in samples(server.get("/metrics").text).items()
            if name == "socialads_model_ready"
        ]
        if ready == [1.0, 1.0]:
            break
        assert time.monotonic() < deadline, ready
        time.sleep(0.5)
