"""Training on a Dask cluster, the quick parts: the setting, an unreachable scheduler, and
scikit-learn's CV fits sent to a cluster (the real multi-process cluster is in
tests/integration/test_dask.py)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from testkit import environ_without_tools, run_cli

from socialads.errors import ClusterUnreachableError
from socialads.settings import Settings


def closed_address() -> str:
    """A scheduler address nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def test_no_address_is_the_default_and_empty_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().dask_address is None
    monkeypatch.setenv("SOCIALADS_DASK_ADDRESS", "  ")
    assert Settings().dask_address is None
    monkeypatch.setenv("SOCIALADS_DASK_ADDRESS", " tcp://scheduler:8786 ")
    assert Settings().dask_address == "tcp://scheduler:8786"


@pytest.mark.parametrize("value", ["scheduler:8786", "local", "tcp://"])
def test_an_address_without_a_scheme_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SOCIALADS_DASK_ADDRESS", value)
    with pytest.raises(ValidationError, match="not a Dask scheduler address"):
        Settings()


def test_an_unreachable_scheduler_is_a_named_error_within_the_timeout() -> None:
    from socialads.models.cluster import check_scheduler

    address = closed_address()
    started = time.monotonic()
    with pytest.raises(ClusterUnreachableError) as caught:
        check_scheduler(address, timeout=1)
    assert time.monotonic() - started < 30  # not distributed's default of minutes
    assert caught.value.address == address
    assert address in str(caught.value)
    assert "SOCIALADS_DASK_ADDRESS" in str(caught.value)


def test_train_against_an_unreachable_scheduler_changes_nothing(tmp_path: Path) -> None:
    address = closed_address()
    env = environ_without_tools() | {"SOCIALADS_HOME": str(tmp_path / "home")}
    ran = run_cli(tmp_path, env, "train", "--dask", address, timeout=120)
    assert ran.returncode == ClusterUnreachableError.exit_code == 5, ran.describe()
    assert ran.error_lines == [
        line for line in ran.stderr.splitlines() if line.strip() and "run's log" not in line
    ], ran.stderr
    assert len(ran.error_lines) == 1
    assert address in ran.error_lines[0]
    assert "Traceback" not in ran.stderr
    # Failed before Prefect, the lake or MLflow were touched.
    home = tmp_path / "home"
    assert not (home / "mlflow").exists()
    assert not (home / "lake").exists()
    assert not (home / "prefect").exists()


def test_the_help_names_the_setting(tmp_path: Path) -> None:
    env = environ_without_tools() | {"SOCIALADS_HOME": str(tmp_path)}
    ran = run_cli(tmp_path, env, "train", "--help", timeout=120)
    assert "--dask" in ran.stdout
    assert "SOCIALADS_DASK_ADDRESS" in " ".join(ran.stdout.split())


def test_cv_fits_on_a_cluster_give_the_local_result(tmp_path: Path, raw_bytes: bytes) -> None:
    from distributed import Client, LocalCluster
    from testkit import publish_processed

    from socialads.data.lake import Lake
    from socialads.models.candidates import CANDIDATES
    from socialads.models.cluster import fits_on_cluster
    from socialads.models.search import search_candidate

    settings = Settings(SOCIALADS_HOME=tmp_path / "home")
    train, test, _ = publish_processed(Lake.from_settings(settings), raw_bytes, settings)

    def search() -> tuple[float, list[float], dict[str, float]]:
        result = search_candidate(
            CANDIDATES["logistic_regression"], train, test, metric="f1", cv_folds=3,
            random_state=42,
        )  # fmt: skip
        return result.cv_score, result.cv_fold_scores, result.holdout

    local = search()
    # Threads in this process: the fits are the cluster's tasks all the same.
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.get_task_stream()  # the scheduler records the tasks from here on
        with fits_on_cluster(cluster.scheduler_address):
            remote = search()
        ran = client.get_task_stream()
    assert len(ran) >= 4 * 3  # four settings x three folds (and the refit maybe)
    assert remote[0] == pytest.approx(local[0], abs=1e-9)
    assert remote[1] == pytest.approx(local[1], abs=1e-9)
    assert remote[2] == pytest.approx(local[2], abs=1e-9)
