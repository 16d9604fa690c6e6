"""A home is self-contained: what `socialads train` makes lives under SOCIALADS_HOME, not in
the folder it was started from."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from testkit import CLI, environ_without_tools, publish_processed, run_cli

pytestmark = pytest.mark.slow

BUYER = {"Gender": "Female", "Age": 45, "EstimatedSalary": 90000}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh home with one quick candidate; its Prefect server stops at the end."""
    home = tmp_path / "home"
    environment = environ_without_tools() | {
        "SOCIALADS_HOME": str(home),
        "SOCIALADS_CANDIDATES": "gaussian_nb",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    yield environment
    run_cli(tmp_path, environment, "local", "stop")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_and_predict(env: dict[str, str], cwd: Path, log: Path) -> dict[str, object]:
    """Start `socialads serve` in ``cwd``, wait until ready, POST one record, stop it."""
    port = free_port()
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"serve never got ready:\n{log.read_text()}")
        response = httpx.post(f"{url}/predict", json=BUYER, timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_train_in_one_folder_serve_and_predict_from_another(
    env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(env["SOCIALADS_HOME"])
    first = tmp_path / "first"
    first.mkdir()
    trained = run_cli(first, env, "train")
    assert trained.returncode == 0, trained.describe()
    assert "Warning" not in trained.stderr, "a third-party warning reached the terminal"

    assert not (first / "mlruns").exists(), "MLflow wrote into the working folder"
    assert sorted(p.name for p in first.iterdir()) == [], "train left files in its folder"
    models = list((home / "mlflow").rglob("MLmodel"))
    assert models, f"no model artifact under {home / 'mlflow'}"

    # Nothing of the first folder is needed any more.
    for path in sorted(first.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    first.rmdir()

    second = tmp_path / "second"
    second.mkdir()
    predicted = run_cli(
        second, env, "predict", "--gender", "Female", "--age", "45", "--salary", "90000"
    )
    assert predicted.returncode == 0, predicted.describe()
    assert json.loads(predicted.stdout)["model_version"] == "1"

    served = serve_and_predict(env, second, tmp_path / "serve.log")
    assert served["model_version"] == "1"
    assert served["prediction"] == json.loads(predicted.stdout)["prediction"]
    assert not (second / "mlruns").exists()


def test_tracking_leaves_no_process_wide_state(tmp_path: Path) -> None:
    """A training tracked in-process leaves MLflow's globals and the environment as they were,
    so settings built afterwards (each flow builds its own) still mean the embedded store."""
    import os

    import mlflow

    from socialads.data.lake import Lake, bundled_dataset
    from socialads.models.training import search_named, track_and_register
    from socialads.settings import Settings

    settings = Settings(SOCIALADS_HOME=tmp_path / "home", SOCIALADS_CANDIDATES="gaussian_nb")

    def tool_variables() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "SOCIALADS_"))}

    environment = tool_variables()
    default_uri = mlflow.get_tracking_uri()
    train, test, manifest = publish_processed(
        Lake.from_settings(settings), bundled_dataset(), settings
    )
    results = [search_named(settings, "gaussian_nb", train, test)]
    report = track_and_register(settings, results, train, test, manifest)

    assert report.decision.promoted
    assert tool_variables() == environment
    assert mlflow.get_tracking_uri() == default_uri
    assert Settings().mlflow_artifact_root is not None
    assert not (tmp_path / "mlruns").exists()
    assert list((tmp_path / "home" / "mlflow" / "artifacts").rglob("MLmodel"))
