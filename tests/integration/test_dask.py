"""Training on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on
127.0.0.1, the embedded default's store, `socialads train --dask tcp://…`.

The search's tasks run on both workers (the scheduler's task stream says where), the result
equals a local run's to 1e-9, and a worker killed mid-search does not change it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from testkit import Ran, environ_without_tools, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASK = str(Path(sys.executable).with_name("dask"))
# logistic_regression has the larger grid (4 settings x 3 folds = 12 fits): something is
# still running on the workers when one is killed.
CANDIDATES = "gaussian_nb,logistic_regression"
FOLDS = "3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A scheduler and its workers, each its own process."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    """Worker address -> its process."""

    def client(self, timeout: float = 10) -> Any:
        from distributed import Client

        return Client(self.address, timeout=timeout, set_as_default=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One SOCIALADS_HOME for the module (its Prefect server started once, stopped at the end)."""
    path = tmp_path_factory.mktemp("socialads-home")
    yield path
    train(path, "local", "stop")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh scheduler and two single-thread workers without nannies (a killed worker
    stays dead), dashboards off; stopped at the end."""
    env = environ_without_tools() | {"PREFECT_HOME": str(tmp_path / "worker-prefect")}
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [DASK, *args], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
            )
        processes.append(process)
        return process

    scheduler = start(
        "scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"
    )
    started = Cluster(address=address, scheduler=scheduler)
    try:
        for name in ("worker-a", "worker-b"):
            start(
                name, "worker", address, "--name", name, "--nthreads", "1", "--no-nanny",
                "--host", "127.0.0.1", "--no-dashboard",
            )  # fmt: skip
        with started.client(timeout=120) as client:  # processes start slowly on a busy box
            client.wait_for_workers(2, timeout=120)
            info = client.scheduler_info(n_workers=-1)["workers"]
        by_name = {w["name"]: a for a, w in info.items()}
        started.workers = {
            by_name[n]: p for n, p in zip(("worker-a", "worker-b"), processes[1:], strict=True)
        }
        yield started
    finally:
        # Workers first: stopped while their scheduler is still up, they do not wait for it.
        for group in (processes[1:], processes[:1]):
            for process in group:
                if process.poll() is None:
                    process.terminate()
            for process in group:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def train(home: Path, *args: str) -> Ran:
    environment = environ_without_tools() | {
        "SOCIALADS_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SOCIALADS_CANDIDATES": CANDIDATES,
        "SOCIALADS_CV_FOLDS": FOLDS,
    }
    return run_cli(home, environment, *args)


def candidate_metrics(home: Path, parent_run_id: str) -> dict[str, dict[str, float]]:
    """Per candidate, the metrics MLflow recorded under the parent run (full precision)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{home}/mlflow/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    keep = ("cv_f1", "cv_f1_std", "holdout_f1", "holdout_accuracy", "holdout_roc_auc")
    return {r.data.tags["candidate"]: {k: r.data.metrics[k] for k in keep} for r in runs}


@pytest.fixture(scope="module")
def local_result(home: Path) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The same training in one process: the reference (report, metrics per candidate)."""
    import json

    ran = train(home, "train", "--json")
    assert ran.returncode == 0, ran.describe()
    report = json.loads(ran.stdout)["train"]
    return report, candidate_metrics(home, report["run_id"])


def assert_same_result(
    home: Path, ran: Ran, local: tuple[dict[str, Any], dict[str, dict[str, float]]]
) -> None:
    import json

    assert ran.returncode == 0, ran.describe()
    report = json.loads(ran.stdout)["train"]
    reference, reference_metrics = local
    assert report["best"] == reference["best"]
    assert [row["params"] for row in report["leaderboard"]] == [
        row["params"] for row in reference["leaderboard"]
    ]
    metrics = candidate_metrics(home, report["run_id"])
    assert metrics.keys() == reference_metrics.keys() == set(CANDIDATES.split(","))
    for name, values in metrics.items():
        for key, value in values.items():
            assert value == pytest.approx(reference_metrics[name][key], abs=1e-9), (name, key)
    # Same data, same best: the gate keeps the local run's champion (no better score).
    assert report["decision"]["promoted"] is False
    assert report["decision"]["champion_version"] == reference["decision"]["version"]


def task_stream(client: Any) -> list[dict[str, Any]]:
    """The scheduler's record of every task run since its task-stream plugin was added."""
    return list(client.get_task_stream())


def test_search_fans_out_over_both_workers_with_the_local_result(
    home: Path, cluster: Cluster, local_result: Any
) -> None:
    with cluster.client() as client:
        task_stream(client)  # installs the scheduler's task-stream plugin before the run
        ran = train(home, "train", "--json", "--dask", cluster.address)
        tasks = task_stream(client)
    assert_same_result(home, ran, local_result)
    # This process reports the searches done on the cluster, as a local run does.
    log = (home / "logs" / "train.log").read_text()
    for name in CANDIDATES.split(","):
        assert f"search {name}: done (cv f1" in log
    workers = {t["worker"] for t in tasks}
    assert workers == set(cluster.workers), tasks
    searches = [t for t in tasks if str(t["key"]).startswith("search")]
    assert len(searches) == 2, [t["key"] for t in tasks]
    # GridSearchCV's fits are tasks of the same scheduler, run on both workers.
    fits = [t for t in tasks if not str(t["key"]).startswith("search")]
    assert {t["worker"] for t in fits} == set(cluster.workers), [t["key"] for t in fits]


def test_a_worker_killed_mid_search_changes_nothing(
    home: Path, cluster: Cluster, local_result: Any
) -> None:
    killed: list[tuple[str, list[str]]] = []
    stop = threading.Event()

    def kill_when_busy() -> None:
        """SIGKILL the first worker the scheduler reports running a fit (not a search: the
        search of the other candidate must still be on the cluster, so the fits can only
        be rescheduled)."""
        with cluster.client() as client:
            while not stop.is_set():
                for worker, keys in client.processing().items():
                    fits = [str(k) for k in keys if not str(k).startswith("search")]
                    if fits and worker in cluster.workers:
                        os.kill(cluster.workers[worker].pid, signal.SIGKILL)
                        killed.append((worker, [str(k) for k in keys]))
                        return
                time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_busy, daemon=True)
    watcher.start()
    try:
        ran = train(home, "train", "--json", "--dask", cluster.address)
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert killed, "no worker was seen running a fit"
    worker, _ = killed[0]
    assert cluster.workers[worker].wait(timeout=10) == -signal.SIGKILL
    with cluster.client() as client:
        assert set(client.scheduler_info(n_workers=-1)["workers"]) == set(cluster.workers) - {
            worker
        }
    assert_same_result(home, ran, local_result)


def test_a_temporary_local_cluster_gives_the_local_result(home: Path, local_result: Any) -> None:
    # `python -m socialads`: the cluster's worker processes (spawned) must not run the CLI.
    ran = train(home, "train", "--json", "--dask", "local")
    assert_same_result(home, ran, local_result)
    log = (home / "logs" / "train.log").read_text()
    assert re.search(r"searching on the Dask cluster at tcp://127\.0\.0\.1:\d+ \(2 workers", log)
