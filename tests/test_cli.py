"""The CLI end to end on the embedded default: train, predict, keep, refuse bad data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import Ran, environ_without_tools, run_cli

from socialads.data.lake import MANIFEST_KEY, RAW_KEY
from socialads.data.processed import Manifest

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "socialads"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh SOCIALADS_HOME shared by the steps of this module; its Prefect server is
    stopped at the end."""
    path = tmp_path_factory.mktemp("socialads-home")
    yield path
    run(path, "local", "stop")


def python(script: str) -> str:
    """Run a Python snippet in a clean environment; its stdout (stderr shown on failure)."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environ_without_tools(),
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def run(home: Path, *args: str, **env: str) -> Ran:
    environment = environ_without_tools()
    environment |= {
        "SOCIALADS_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Two quick families keep the module short; the full search runs in the benchmark.
        "SOCIALADS_CANDIDATES": "gaussian_nb,logistic_regression",
        **env,
    }
    return run_cli(home, environment, *args)


def registry_state(home: Path) -> tuple[int, str]:
    """(number of registered versions, champion version) read straight from MLflow."""
    uri = f"sqlite:///{home}/mlflow/mlflow.db"
    count, champion = python(
        "from mlflow import MlflowClient;"
        f"c = MlflowClient(tracking_uri='{uri}', registry_uri='{uri}');"
        "vs = c.search_model_versions(\"name='SocialNetworkAdsModel'\");"
        "print(len(vs), c.get_model_version_by_alias('SocialNetworkAdsModel', 'champion').version)"
    ).split()
    return int(count), champion


def test_train_registers_a_champion_and_predict_answers(home: Path) -> None:
    trained = run(home, "train")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "promoted version 1 to champion" in trained.stdout
    for name in ("gaussian_nb", "logistic_regression"):
        assert name in trained.stdout
    # Prefect's and MLflow's console output goes to the run's log, not to the terminal.
    log = (home / "logs" / "train.log").read_text()
    assert "Beginning flow run" in log
    assert "search gaussian_nb: done (cv f1" in log
    assert "Beginning flow run" not in trained.stderr + trained.stdout
    lake = home / "lake"
    manifest = Manifest.from_json((lake / MANIFEST_KEY).read_bytes())
    for key in (RAW_KEY, manifest.train_key, manifest.test_key, manifest.scaler_key):
        assert (lake / key).is_file(), key

    # The first call after training answers from the champion's cached ONNX graph: neither
    # MLflow nor scikit-learn is imported (-X importtime lists every imported module).
    predicted = run(
        home, "predict", "--gender", "Female", "--age", "45", "--salary", "90000",
        PYTHONPROFILEIMPORTTIME="1",
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in predicted.stderr.splitlines()}
    assert "onnxruntime" in imported
    assert not imported & {"mlflow", "sklearn", "skops"}
    answer = json.loads(predicted.stdout)
    assert answer["prediction"] == 1
    assert answer["label"] == "COMPRA"
    assert answer["model_version"] == "1"
    assert 0.5 < answer["probability"] <= 1

    low = json.loads(
        run(home, "predict", "--gender", " male ", "--age", "19", "--salary", "19000").stdout
    )
    assert (low["prediction"], low["label"]) == (0, "NO COMPRA")


def test_second_training_on_the_same_data_keeps_the_champion(home: Path) -> None:
    # stderr on a terminal: the steps are drawn live there; stdout (piped) gets the result.
    trained, terminal = run_with_terminal_stderr(home, "train")
    assert trained.returncode == 0, terminal[-3000:]
    assert "kept champion version 1" in trained.stdout
    assert registry_state(home) == (2, "1")
    for line in (
        "✓ data-prep validate  400 rows",
        "✓ search gaussian_nb  cv f1 0.",
        "✓ search logistic_regression  cv f1 0.",
        "✓ register registry and promotion gate  kept champion version 1",
    ):
        assert line in terminal, terminal[-3000:]
    assert "Beginning flow run" not in terminal


def run_with_terminal_stderr(home: Path, *args: str) -> tuple[Ran, str]:
    """Run the CLI with stderr on a pseudo-terminal; the call and what the terminal got."""
    environment = environ_without_tools() | {
        "SOCIALADS_HOME": str(home),
        "SOCIALADS_CANDIDATES": "gaussian_nb,logistic_regression",
        "TERM": "xterm",
        "COLUMNS": "200",
    }
    environment.pop("NO_COLOR", None)
    primary, secondary = os.openpty()
    received: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        done = subprocess.run(
            [*CLI, *args],
            env=environment,
            cwd=home,
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        os.close(secondary)
        reader.join(10)
        os.close(primary)
    screen = b"".join(received).decode(errors="replace")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen).replace("\r", "\n")
    return Ran(args, done.returncode, done.stdout, "", 0.0), plain


def set_champion(home: Path, version: str) -> None:
    uri = f"sqlite:///{home}/mlflow/mlflow.db"
    python(
        "from mlflow import MlflowClient;"
        f"MlflowClient(tracking_uri='{uri}', registry_uri='{uri}')"
        f".set_registered_model_alias('SocialNetworkAdsModel', 'champion', '{version}')"
    )


def test_predict_follows_the_alias_not_its_cache(home: Path) -> None:
    """predict keeps champions' ONNX graphs in a local cache; moving the alias by hand (as an
    operator could in the MLflow UI) must still change the answering version at once."""
    args = ("predict", "--gender", "Female", "--age", "45", "--salary", "90000")
    set_champion(home, "2")
    assert json.loads(run(home, *args).stdout)["model_version"] == "2"
    set_champion(home, "1")
    assert json.loads(run(home, *args).stdout)["model_version"] == "1"
    assert json.loads(run(home, *args).stdout)["model_version"] == "1"


def test_a_champion_without_onnx_is_served_by_its_pipeline(home: Path) -> None:
    """KNN's ONNX graph disagrees with scikit-learn on ties: it is promoted all the same and
    `predict` answers with its scikit-learn Pipeline, saying why."""
    trained = run(home, "train", SOCIALADS_CANDIDATES="knn")  # holdout F1 0.867 > 0.821
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "promoted version 3" in trained.stdout
    args = ("predict", "--gender", "Female", "--age", "45", "--salary", "90000")
    predicted = run(home, *args)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["model_version"] == "3"
    assert "ONNX disagrees with scikit-learn" in predicted.stderr
    set_champion(home, "1")


def processed_files(lake: Path) -> dict[str, bytes]:
    """Every data-prep output in a local lake, by path."""
    return {
        str(path.relative_to(lake)): path.read_bytes()
        for path in (lake / "processed").rglob("*")
        if path.is_file()
    }


def test_corrupted_raw_file_fails_and_changes_nothing(home: Path) -> None:
    lake = home / "lake"
    before_registry = registry_state(home)
    before_outputs = processed_files(lake)
    raw = (lake / RAW_KEY).read_bytes()
    (lake / RAW_KEY).write_bytes(raw.replace(b",Male,19,", b",Male,-19,", 1))

    trained = run(home, "train")
    assert trained.returncode != 0
    assert "Age" in trained.stderr
    assert "line 2" in trained.stderr
    assert "Traceback" not in trained.stderr + trained.stdout
    log = home / "logs" / "train.log"
    assert f"the run's log: {log}" in trained.stderr
    assert "data-prep validate: failed" in log.read_text()
    assert registry_state(home) == before_registry
    assert processed_files(lake) == before_outputs
    (lake / RAW_KEY).write_bytes(raw)


def test_tracking_server_down_fails_clearly_and_changes_nothing(home: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    before = registry_state(home)
    trained = run(home, "train", MLFLOW_TRACKING_URI=dead, SOCIALADS_CANDIDATES="gaussian_nb")
    assert trained.returncode != 0
    assert f"MLflow at {dead} failed" in trained.stderr
    assert "Traceback" not in trained.stderr + trained.stdout
    assert registry_state(home) == before


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--gender", "robot", "--age", "45", "--salary", "90000"], "Gender"),
        (["--gender", "Female", "--age", "-1", "--salary", "90000"], "Age"),
        (["--gender", "Female", "--age", "45", "--salary", "lots"], "--salary"),
    ],
)
def test_invalid_input_exits_2_naming_the_field(home: Path, args: list[str], field: str) -> None:
    result = run(home, "predict", *args)
    assert result.returncode == 2
    assert field in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_without_a_champion_says_to_train(tmp_path: Path) -> None:
    result = run(tmp_path, "predict", "--gender", "Female", "--age", "45", "--salary", "90000")
    assert result.returncode != 0
    assert "socialads train" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_has_help(home: Path) -> None:
    for command in (
        [],
        ["train"],
        ["predict"],
        ["serve"],
        ["deploy"],
        ["lake", "init"],
        ["data", "synth"],
    ):
        result = run(home, *command, "--help")
        assert result.returncode == 0, command
        assert "Usage" in result.stdout
    assert "SOCIALADS_HOME" in run(home, "--help").stdout


def test_option_help_names_the_variable_behind_each_option(home: Path) -> None:
    for command, variables in {
        "train": ("SOCIALADS_SELECTION_METRIC", "SOCIALADS_CANDIDATES", "SOCIALADS_CV_FOLDS"),
        "serve": ("SOCIALADS_API_PORT", "SOCIALADS_API_WORKERS", "SOCIALADS_RELOAD_INTERVAL"),
    }.items():
        shown = run(home, command, "--help", COLUMNS="200").stdout
        for variable in variables:
            assert variable in shown, (command, variable, shown)


def test_quiet_train_prints_the_decision_only(home: Path) -> None:
    trained = run(home, "train", "--quiet")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert trained.stdout.count("\n") == 1, trained.stdout
    assert trained.stdout.startswith(("kept champion", "promoted version")), trained.stdout
    assert trained.stderr == "", trained.stderr


def test_train_on_a_synthetic_dataset_says_which_families_were_subsampled(
    home: Path, tmp_path: Path
) -> None:
    data = tmp_path / "synthetic"
    made = run(home, "data", "synth", "--rows", "3000", "--output", str(data), "--seed", "5")
    assert made.returncode == 0, made.stderr[-3000:]
    settings = {
        "SOCIALADS_RAW_DATASET": str(data),
        "SOCIALADS_CANDIDATES": "gaussian_nb,knn",
        "SOCIALADS_SEARCH_MAX_ROWS": "500",
    }
    trained = run(home, "train", "--json", **settings)
    assert trained.returncode == 0, trained.stderr[-3000:]
    board = {row["candidate"]: row for row in json.loads(trained.stdout)["train"]["leaderboard"]}
    assert (board["knn"]["train_rows"], board["knn"]["subsampled"]) == (500, True)
    assert (board["gaussian_nb"]["train_rows"], board["gaussian_nb"]["subsampled"]) == (2400, False)
    manifest = Manifest.from_json((home / "lake" / MANIFEST_KEY).read_bytes())
    assert (manifest.raw_uri, manifest.raw_rows) == (str(data), 3000)
    shown = run(home, "train", **settings)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "(subsample of 500 rows)" in shown.stdout
