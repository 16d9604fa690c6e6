"""The monitor on the embedded default: a real champion (one quick family) in a local MLflow
store, its data-prep run in a local lake, and prediction logs written as the API writes them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from testkit import ROOT, Ran, environ_without_tools, publish_processed, run_cli, traffic

from socialads.data import production
from socialads.data.lake import RAW_KEY, Lake
from socialads.data.processed import write_processed
from socialads.data.production import FEEDBACK_LOG, PREDICTION_LOG, table_of, write_parts
from socialads.data.schema import FEATURES
from socialads.data.validation import load_and_validate
from socialads.features.preprocessing import fit_scaler, split
from socialads.models.tracking import connect
from socialads.models.training import search_all, track_and_register
from socialads.monitoring.monitor import REPORTS, monitor, with_predictions
from socialads.settings import Settings, env_names

pytestmark = pytest.mark.slow

SCREENSHOT = ROOT / "scripts" / "report_screenshot.py"
# The last whole minute: labels of the window's predictions are in the past for retraining.
END = datetime.now(UTC).replace(second=0, microsecond=0)
START = END - timedelta(hours=24)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a home with a champion, trained in process (no Prefect)."""
    home = tmp_path_factory.mktemp("monitor-home")
    with pytest.MonkeyPatch.context() as mp:
        for field in Settings.model_fields:  # (the autouse clean-up is per test; this is not)
            for name in env_names(field):
                mp.delenv(name, raising=False)
        mp.chdir(home)
        settings = Settings(SOCIALADS_HOME=str(home), SOCIALADS_CANDIDATES="gaussian_nb")
    lake = Lake.from_settings(settings)
    lake.ensure_root()
    lake.ensure_raw()
    train, test, manifest = publish_processed(lake, lake.read_bytes(RAW_KEY), settings)
    report = track_and_register(settings, search_all(settings, train, test), train, test, manifest)
    assert report.decision.promoted
    yield settings


@pytest.fixture
def settings(trained: Settings) -> Settings:
    """The trained home with its own, empty lake of production records for one test."""
    from socialads.data.lake import MANIFEST_KEY

    lake = Lake.from_settings(trained)
    for prefix in (production.PREDICTIONS, production.FEEDBACK, REPORTS):
        lake.delete_folder(prefix)
    assert lake.exists(MANIFEST_KEY)
    return trained


def log(settings: Settings, frame: pd.DataFrame, *, labels: pd.Series | None = None) -> list[str]:
    """Write ``frame`` (features) to the prediction log as the champion would have scored it
    inside the window, with ``labels`` as feedback; returns the request ids."""
    from socialads.models.registry import champion_version, load_version

    client = connect(settings)
    version = str(champion_version(client, settings).version)  # type: ignore[union-attr]
    scored = with_predictions(load_version(client, settings, version), frame)
    ids = [uuid.uuid4().hex for _ in range(len(scored))]
    step = (END - START) / (len(scored) + 1)
    rows = [
        (rid, START + step * (i + 1), "api", version, g, float(a), float(s), float(p), int(y))
        for i, (rid, g, a, s, p, y) in enumerate(
            zip(ids, *(scored[c] for c in (*FEATURES, "probability", "prediction")), strict=True)
        )
    ]
    lake = Lake.from_settings(settings)
    write_parts(lake, PREDICTION_LOG, table_of(PREDICTION_LOG, rows))
    if labels is not None:
        stamp = END - timedelta(minutes=1)
        feedback = [(rid, int(y), stamp) for rid, y in zip(ids, labels, strict=True)]
        write_parts(lake, FEEDBACK_LOG, table_of(FEEDBACK_LOG, feedback))
    return ids


def shifted(raw: bytes, rows: int = 300) -> pd.DataFrame:
    """Users 15 years older and 1.6 times richer than the training data (within bounds)."""
    return traffic(raw, rows, np.random.default_rng(7), age_shift=15, salary_factor=1.6)


def test_shifted_age_and_salary_are_flagged_gender_is_not(
    settings: Settings, raw_bytes: bytes
) -> None:
    log(settings, shifted(raw_bytes))
    result = monitor(settings, START, END)

    verdicts = {c.column: c.verdict for c in result.features}
    assert verdicts == {"Gender": "stable", "Age": "drifted", "EstimatedSalary": "drifted"}
    assert result.status == "drifted" and result.retrain_due
    assert result.drift_share == pytest.approx(2 / 3)
    age = next(c for c in result.features if c.column == "Age")
    assert age.current - age.reference == pytest.approx(15, abs=3)
    # Older, richer users buy more: the predictions moved with the features.
    assert {c.column: c.drifted for c in result.predictions} == {
        "probability": True,
        "prediction": True,
    }
    assert result.quality is None and "live quality needs 50" in result.message

    # The report is in the lake and, with the headline numbers, in the monitoring experiment.
    lake = Lake.from_settings(settings)
    assert result.report_uri is not None
    key = result.report_uri.removeprefix(f"{lake.url}/")
    assert key.startswith(f"{REPORTS}/") and key.endswith(".html")
    html = lake.read_bytes(key)
    assert b"EstimatedSalary" in html and len(html) > 100_000
    client = connect(settings)
    assert result.mlflow_run_id is not None
    run = client.get_run(result.mlflow_run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == settings.monitoring_experiment
    assert run.data.metrics["drifted.Age"] == 1.0
    assert run.data.metrics["drifted.Gender"] == 0.0
    assert run.data.metrics["drift_share"] == pytest.approx(2 / 3)
    assert run.data.params["model_version"] == result.model_version
    manifest = json.loads(lake.read_bytes("processed/manifest.json"))
    assert run.data.params["processed_run"] == manifest["run_id"] == result.processed_run
    assert run.data.tags["monitor.status"] == "drifted"
    logged = {a.path for a in client.list_artifacts(result.mlflow_run_id, "reports")}
    assert logged == {f"reports/{key.rsplit('/', 1)[-1]}"}

    payload = result.event_payload()
    assert payload["drifted_features"] == ["Age", "EstimatedSalary"]
    assert "| Age | feature | mean |" in result.markdown()


def test_traffic_from_the_training_distribution_has_not_drifted(
    settings: Settings, raw_bytes: bytes
) -> None:
    """Each column's test flags a same-distribution sample 5% of the time (its threshold);
    the window's verdict needs half the features, so a single false alarm does not count."""
    rng = np.random.default_rng(11)
    log(settings, traffic(raw_bytes, 300, rng))
    result = monitor(settings, START, END, log_to_mlflow=False)
    assert result.status == "ok" and not result.retrain_due, result.markdown()
    assert sum(c.drifted for c in result.features) <= 1, result.markdown()
    assert result.drift_share is not None and result.drift_share < settings.monitor_drift_share
    assert result.mlflow_run_id is None


def test_flipped_labels_put_the_live_f1_under_its_floor(
    settings: Settings, raw_bytes: bytes
) -> None:
    rng = np.random.default_rng(5)
    users = traffic(raw_bytes, 200, rng)
    truth = users["Purchased"].copy()
    log(settings, users, labels=truth)
    honest = monitor(settings, START, END, log_to_mlflow=False)
    assert honest.quality is not None and honest.quality.rows == 200
    assert not honest.quality.degraded and honest.status == "ok", honest.message
    assert abs(honest.quality.live["f1"] - honest.quality.holdout["f1"]) < 0.15

    # The same users relabelled: every buyer over 40 now did not buy, and the other way round.
    flipped = truth.where(users["Age"] <= 40, 1 - truth)
    later = {"purchased": flipped}
    ids = production.read(Lake.from_settings(settings), PREDICTION_LOG)["request_id"]
    stamp = END - timedelta(seconds=30)
    rows = [(rid, int(y), stamp) for rid, y in zip(ids, later["purchased"], strict=True)]
    write_parts(Lake.from_settings(settings), FEEDBACK_LOG, table_of(FEEDBACK_LOG, rows))
    result = monitor(settings, START, END)
    assert result.quality is not None
    assert result.quality.live["f1"] < settings.monitor_f1_floor
    assert result.status == "degraded" and result.retrain_due
    assert "live F1" in result.message and "< floor 0.7" in result.message
    assert result.quality_report_uri is not None and result.quality_report_uri.endswith(
        "-quality.html"
    )
    run = connect(settings).get_run(result.mlflow_run_id)  # type: ignore[arg-type]
    assert run.data.metrics["live_f1"] == pytest.approx(result.quality.live["f1"])
    assert run.data.metrics["holdout_f1"] == pytest.approx(result.quality.holdout["f1"])


def test_an_empty_or_thin_window_is_a_message_not_an_error(
    settings: Settings, raw_bytes: bytes
) -> None:
    empty = monitor(settings, START, END)
    assert empty.status == "skipped" and empty.rows == 0
    assert empty.message.startswith(f"no predictions between {START:%Y-%m-%d %H:%M} and ")
    assert "no verdict, no report" in empty.message
    log(settings, traffic(raw_bytes, 20, np.random.default_rng(1)))
    thin = monitor(settings, START, END)
    assert thin.status == "skipped" and thin.rows == 20
    assert "only 20 predictions" in thin.message and "needs 100" in thin.message
    assert not Lake.from_settings(settings).glob(f"{REPORTS}/*")
    assert thin.report_uri is None and thin.mlflow_run_id is None


def test_the_reference_is_the_champions_training_run_not_the_current_pointer(
    settings: Settings, raw_bytes: bytes
) -> None:
    """A newer data-prep run (here: of other data) does not change what the monitor compares
    with; the champion's own run does."""
    lake = Lake.from_settings(settings)
    pointer = lake.read_bytes("processed/manifest.json")
    older = load_and_validate(raw_bytes)
    moved = older.assign(Age=(older["Age"] + 15).clip(upper=100))
    train, test = split(moved, 0.2, 42)
    write_processed(
        lake,
        raw_sha256="other",
        raw_rows=len(moved),
        train=train,
        test=test,
        scaler=fit_scaler(train),
        test_size=0.2,
        random_state=42,
    )
    try:
        log(settings, traffic(raw_bytes, 300, np.random.default_rng(3), age_shift=15))
        result = monitor(settings, START, END, log_to_mlflow=False)
        assert json.loads(pointer)["run_id"] == result.processed_run
        assert {c.column: c.verdict for c in result.features}["Age"] == "drifted"
    finally:
        lake.write_bytes("processed/manifest.json", pointer)


def test_a_saved_report_renders_in_headless_chromium(
    settings: Settings, raw_bytes: bytes, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium): no screenshot")
    log(settings, shifted(raw_bytes))
    result = monitor(settings, START, END, log_to_mlflow=False)
    assert result.report_uri is not None
    png = tmp_path / "report.png"
    done = subprocess.run(
        [sys.executable, str(SCREENSHOT), result.report_uri, str(png)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG")
    # A blank page is a few kB; the rendered report (histograms, tables) is far more.
    assert len(data) > 50_000, len(data)


def test_settings_bound_the_verdicts(settings: Settings, raw_bytes: bytes) -> None:
    """A drift share of 1 needs every feature to drift: two of three is not enough."""
    log(settings, shifted(raw_bytes))
    strict = Settings(
        **{
            "SOCIALADS_HOME": str(settings.home),
            "SOCIALADS_CANDIDATES": "gaussian_nb",
            "SOCIALADS_MONITOR_DRIFT_SHARE": "1",
        }
    )
    result = monitor(strict, START, END, log_to_mlflow=False)
    assert [c.column for c in result.features if c.drifted] == ["Age", "EstimatedSalary"]
    assert result.status == "ok" and not result.drifted
    assert replace(result, status="drifted").retrain_due


# -- the command line ---------------------------------------------------------------------------


def cli(settings: Settings, *args: str) -> Ran:
    environment = environ_without_tools() | {
        "SOCIALADS_HOME": str(settings.home),
        "SOCIALADS_CANDIDATES": "gaussian_nb",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    return run_cli(settings.home, environment, *args)


def test_cli_reports_an_empty_window_and_exits_0(settings: Settings) -> None:
    ran = cli(settings, "monitor", "--since", "2h")
    assert ran.returncode == 0, ran.describe()
    assert "0 predictions" in ran.stdout and "no verdict, no report" in ran.stdout
    bad = cli(settings, "monitor", "--since", "2h", "--start", "2026-12-01")
    assert bad.returncode == 2 and bad.error_lines == [
        "error: give --since or --start/--end, not both"
    ]


def test_cli_monitor_retrain_learns_from_production_on_the_embedded_default(
    settings: Settings, raw_bytes: bytes
) -> None:
    """The loop without services: drifted traffic with its outcomes → `socialads monitor
    --retrain` runs the pipeline in process; the labelled rows join the training split only."""
    from socialads.models.registry import champion_version

    lake = Lake.from_settings(settings)
    before = json.loads(lake.read_bytes("processed/manifest.json"))
    champion = str(champion_version(connect(settings), settings).version)  # type: ignore[union-attr]
    users = shifted(raw_bytes)
    log(settings, users, labels=users["Purchased"])
    try:
        ran = cli(
            settings, "monitor", "--start", START.isoformat(), "--end", END.isoformat(), "--json"
        )
        assert ran.returncode == 0, ran.describe()
        plain = json.loads(ran.stdout)
        assert "retrained" not in plain
        assert {f["column"]: f["verdict"] for f in plain["features"]} == {
            "Gender": "stable",
            "Age": "drifted",
            "EstimatedSalary": "drifted",
        }
        ran = cli(
            settings,
            "monitor",
            "--start",
            START.isoformat(),
            "--end",
            END.isoformat(),
            "--json",
            "--retrain",
        )
        assert ran.returncode == 0, ran.describe()
        out = json.loads(ran.stdout)  # stdout is the JSON alone
        # The users' outcomes are those of the unshifted population: the champion, seeing
        # older and richer users, now predicts purchases that do not happen.
        assert out["status"] == "drifted and degraded" and out["retrain_due"]
        assert out["quality"]["live"]["f1"] < out["quality"]["f1_floor"]
        decision = out["retrained"]["train"]["decision"]
        assert int(decision["version"]) > int(out["model_version"])
        assert decision["reason"]
        after = json.loads(lake.read_bytes("processed/manifest.json"))
        assert after["run_id"] != before["run_id"]
        assert after["production_rows"] == len(users)
        assert after["train_rows"] == before["train_rows"] + len(users)
        # The holdout is the raw data's own split, byte for byte: the gate compares like
        # with like.
        assert (after["test_sha256"], after["test_rows"]) == (
            before["test_sha256"],
            before["test_rows"],
        )
    finally:
        cli(settings, "local", "stop")
        # Other tests expect the first champion and its processed run as the pointer.
        lake.write_bytes("processed/manifest.json", json.dumps(before, indent=2).encode())
        connect(settings).set_registered_model_alias(
            settings.model_name, settings.champion_alias, champion
        )
