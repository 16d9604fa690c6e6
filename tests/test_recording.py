"""The training's MLflow record written by a helper process while the searches run: the same
record as in-process, its log records back in the caller, nothing lost when a training fails
or the helper dies, and a working fallback where the helper cannot start."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from testkit import environ_without_tools, publish_processed

FAMILIES = "gaussian_nb,logistic_regression"


def settings_at(home: Path) -> Any:
    from socialads.settings import Settings

    return Settings(SOCIALADS_HOME=home, SOCIALADS_CANDIDATES=FAMILIES, SOCIALADS_CV_FOLDS=3)


@pytest.fixture(scope="module")
def searched(raw_bytes: bytes, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two quick candidates searched on the real split, and the lineage of that split."""
    from socialads.data.lake import Lake
    from socialads.models.training import search_all

    settings = settings_at(tmp_path_factory.mktemp("searched"))
    train, test, manifest = publish_processed(Lake.from_settings(settings), raw_bytes, settings)
    results = search_all(settings, train, test)
    return {"train": train, "test": test, "manifest": manifest, "results": results}


def record(settings: Any, searched: dict[str, Any]) -> Any:
    """Record the searched training as the train flow does (helper process)."""
    from socialads.models.recording import Recorder

    with Recorder(settings) as recorder:
        recorder.begin(searched["manifest"], searched["test"])
        for result in searched["results"]:
            recorder.candidate(result)
        return recorder.finish(searched["results"], searched["train"])


def described(settings: Any, run_id: str) -> dict[str, Any]:
    """What MLflow holds of a training: parent and candidate runs, plots, the version."""
    from socialads.models import tracking

    client = tracking.connect(settings)
    parent = client.get_run(run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
    )
    version = client.get_model_version_by_alias(settings.model_name, settings.champion_alias)
    return {
        "status": parent.info.status,
        "params": parent.data.params,
        "metrics": parent.data.metrics,
        "candidates": {
            run.data.tags["candidate"]: (
                run.info.status,
                {k: v for k, v in run.data.metrics.items()},
                sorted(a.path for a in client.list_artifacts(run.info.run_id, "plots")),
            )
            for run in children
        },
        "champion": (str(version.version), version.run_id == run_id),
    }


def test_the_helper_records_what_the_in_process_form_records(
    searched: dict[str, Any], tmp_path: Path
) -> None:
    from socialads.models.training import track_and_register

    helper_settings = settings_at(tmp_path / "helper")
    inline_settings = settings_at(tmp_path / "inline")
    by_helper = record(helper_settings, searched)
    inline = track_and_register(
        inline_settings,
        searched["results"],
        searched["train"],
        searched["test"],
        searched["manifest"],
    )

    assert by_helper.as_dict() | {"run_id": "", "model_uri": ""} == inline.as_dict() | {
        "run_id": "",
        "model_uri": "",
    }
    helper_record = described(helper_settings, by_helper.run_id)
    assert helper_record == described(inline_settings, inline.run_id)
    assert helper_record["status"] == "FINISHED"
    assert set(helper_record["candidates"]) == set(FAMILIES.split(","))
    for status, metrics, plots in helper_record["candidates"].values():
        assert status == "FINISHED"
        assert "cv_f1" in metrics
        assert plots == ["plots/confusion_matrix.png", "plots/roc_curve.png"]
    assert helper_record["champion"] == ("1", True)


def test_the_helpers_log_records_reach_the_callers_loggers(
    searched: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="socialads"):
        record(settings_at(tmp_path), searched)

    (gate,) = [r for r in caplog.records if r.name == "socialads.models.registry"]
    assert gate.getMessage().startswith("promoted version 1 to champion")
    assert gate.process != os.getpid()  # made in the helper, handled here


def test_a_failed_training_keeps_its_finished_candidates_and_closes_failed(
    searched: dict[str, Any], tmp_path: Path
) -> None:
    from socialads.models import tracking
    from socialads.models.recording import Recorder

    settings = settings_at(tmp_path)
    first = searched["results"][0]
    with pytest.raises(RuntimeError, match="the next search failed"), Recorder(settings) as rec:
        rec.begin(searched["manifest"], searched["test"])
        rec.candidate(first)
        raise RuntimeError("the next search failed")

    client = tracking.connect(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert runs["training"].info.status == "FAILED"
    assert runs[first.name].info.status == "FINISHED"
    assert runs[first.name].data.tags["mlflow.parentRunId"] == runs["training"].info.run_id
    assert not client.search_registered_models()


def helper_pid(settings: Any) -> int:
    """Run in the helper by :meth:`Recorder.call`: its process id."""
    return os.getpid()


def test_a_helper_that_dies_is_a_registry_error(searched: dict[str, Any], tmp_path: Path) -> None:
    from socialads.errors import RegistryError
    from socialads.models.recording import Recorder

    with (
        pytest.raises(RegistryError, match="stopped unexpectedly"),
        Recorder(settings_at(tmp_path)) as recorder,
    ):
        recorder.begin(searched["manifest"], searched["test"])
        os.kill(recorder.call(helper_pid), signal.SIGKILL)
        recorder.finish(searched["results"], searched["train"])


RECORD_SCRIPT = """\
import sys
from socialads.data.lake import Lake, bundled_dataset
from socialads.models.recording import Recorder
from socialads.models.training import search_all
from socialads.settings import Settings
from testkit import publish_processed

def main():
    settings = Settings(SOCIALADS_HOME={home!r}, SOCIALADS_CANDIDATES="gaussian_nb")
    raw = bundled_dataset()
    train, test, manifest = publish_processed(Lake.from_settings(settings), raw, settings)
    with Recorder(settings) as recorder:
        recorder.begin(manifest, test)
        results = search_all(settings, train, test)
        recorder.candidate(results[0])
        report = recorder.finish(results, train)
    print(report.decision.headline())
    print(sorted(m for m in ("mlflow", "skops", "matplotlib", "dask.array") if m in sys.modules))
"""


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "record.py"
    script.write_text(body)
    env = environ_without_tools() | {"PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_searching_process_imports_neither_mlflow_nor_skops(tmp_path: Path) -> None:
    """MLflow, skops and matplotlib load in the helper only (skops pulls in dask.array, which a
    search running meanwhile saw half-imported when it loaded in the searching process)."""
    body = RECORD_SCRIPT.format(home=str(tmp_path / "home"))
    ran = run_script(tmp_path, body + 'if __name__ == "__main__":\n    main()\n')

    assert ran.returncode == 0, ran.stderr
    headline, imported = ran.stdout.strip().splitlines()[-2:]
    assert headline.startswith("promoted version 1 to champion")
    assert imported == "[]"


def test_a_script_without_the_main_guard_records_in_its_own_process(tmp_path: Path) -> None:
    body = RECORD_SCRIPT.format(home=str(tmp_path / "home"))
    ran = run_script(tmp_path, body + "main()\n")

    assert ran.returncode == 0, ran.stderr
    assert "recording in this process instead" in ran.stderr
    headline, imported = ran.stdout.strip().splitlines()[-2:]
    assert headline.startswith("promoted version 1 to champion")
    assert "mlflow" in imported  # recorded here after all


def test_a_tracking_store_failure_names_the_store_with_the_helpers_traceback(
    searched: dict[str, Any], tmp_path: Path
) -> None:
    from socialads.errors import RegistryError
    from socialads.models.recording import HelperError, Recorder
    from socialads.settings import Settings

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the store's folder should be")
    uri = f"sqlite:///{blocked}/mlflow.db"
    settings = Settings(SOCIALADS_HOME=tmp_path, MLFLOW_TRACKING_URI=uri)

    with pytest.raises(RegistryError) as caught, Recorder(settings) as recorder:
        recorder.begin(searched["manifest"], searched["test"])
        recorder.finish(searched["results"], searched["train"])

    assert str(caught.value).startswith(f"MLflow at {uri} failed: ")
    cause = caught.value.__cause__
    assert isinstance(cause, HelperError)
    assert "Traceback (most recent call last)" in str(cause)
