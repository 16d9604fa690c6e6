"""`socialads score` and `socialads feedback` on the embedded default, against a real champion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from testkit import Ran, environ_without_tools, run_cli

from socialads.data.lake import Lake
from socialads.data.production import PREDICTION_LOG, labelled_rows, read
from socialads.data.schema import LABELS
from socialads.settings import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with a champion (two quick families); its Prefect server stopped at the end."""
    path = tmp_path_factory.mktemp("socialads-score-home")
    trained = run(path, "train")
    assert trained.returncode == 0, trained.describe()
    yield path
    run(path, "local", "stop")


def run(home: Path, *args: str, **env: str) -> Ran:
    environment = environ_without_tools() | {
        "SOCIALADS_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SOCIALADS_CANDIDATES": "gaussian_nb,logistic_regression",
        **env,
    }
    return run_cli(home, environment, *args)


def users(path: Path, raw: bytes, corrupt: dict[int, str]) -> pd.DataFrame:
    """The bundled dataset as a file of users, with some data rows (1-based) replaced."""
    lines = raw.decode().splitlines()
    for row, text in corrupt.items():
        lines[row] = text
    path.write_text("\n".join(lines) + "\n")
    return pd.read_csv(path, dtype=str)


CORRUPT = {
    3: "15000003,Robot,30,50000,0",
    7: "15000007,Male,170,50000,0",
    8: "15000008,Female,,50000,1",
    20: "15000020,Male,abc,-1,0",
}


def test_score_writes_scores_rejects_and_the_log(
    home: Path, tmp_path: Path, raw_bytes: bytes
) -> None:
    source = tmp_path / "users.csv"
    given = users(source, raw_bytes, CORRUPT)
    target = tmp_path / "out" / "scores.parquet"
    done = run(home, "score", "--input", str(source), "--output", str(target), "--json")
    assert done.returncode == 0, done.describe()
    summary = json.loads(done.stdout)
    assert (summary["rows_scored"], summary["rows_rejected"]) == (len(given) - 4, 4)
    assert summary["model_version"] == "1"
    assert sum(summary["labels"].values()) == summary["rows_scored"]

    scores = pd.read_parquet(target)
    assert list(scores.columns) == [
        *given.columns,
        "request_id",
        "prediction",
        "label",
        "probability",
        "model_version",
        "scored_at",
    ]
    assert len(scores) == summary["rows_scored"]
    assert "15000003" not in set(scores["User ID"])  # the input's id column is kept
    assert scores["label"].tolist() == [LABELS[p] for p in scores["prediction"]]
    assert scores["probability"].between(0, 1).all()
    assert scores["request_id"].is_unique

    rejects = pd.read_csv(tmp_path / "out" / "scores.rejects.csv")
    assert rejects["row"].tolist() == sorted(CORRUPT)
    reasons = dict(zip(rejects["row"], rejects["reason"], strict=True))
    assert reasons[3].startswith("Gender: must be one of Female, Male")
    assert reasons[7].startswith("Age: must be between 18 and 100 years")
    assert reasons[8] == "Age: is required"
    assert reasons[20].startswith("Age: must be a number") and "EstimatedSalary" in reasons[20]

    settings = load_settings(SOCIALADS_HOME=str(home))
    logged = read(Lake.from_settings(settings), PREDICTION_LOG)
    mine = logged[logged["request_id"].isin(scores["request_id"])]
    assert len(mine) == len(scores)
    assert set(mine["source"]) == {"score"}
    merged = mine.merge(scores, on="request_id", suffixes=("", "_out"))
    assert (merged["probability"] == merged["probability_out"]).all()

    # Feedback on some scored rows joins back to the log.
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": scores["request_id"][:5], "purchased": [1, 0, 1, 0, 1]}).to_csv(
        labels, index=False
    )
    fed = run(home, "feedback", "--file", str(labels))
    assert fed.returncode == 0, fed.describe()
    assert "recorded 5 labels" in fed.stdout
    start = pd.Timestamp(scores["scored_at"].min()).to_pydatetime()
    joined = labelled_rows(Lake.from_settings(settings), start, pd.Timestamp.now(tz="UTC"))
    assert sorted(joined["request_id"]) == sorted(scores["request_id"][:5])


def test_score_without_a_valid_row_or_input_fails_by_name(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Gender,Age,EstimatedSalary\nRobot,30,1\nMale,10,1\n")
    target = tmp_path / "scores.parquet"
    done = run(home, "score", "-i", str(bad), "-o", str(target))
    assert done.returncode == 4, done.describe()
    assert "no valid row to score (2 rejected)" in done.stderr
    assert not target.exists()  # nothing half-written
    assert (tmp_path / "scores.rejects.csv").exists()

    missing = run(home, "score", "-i", str(tmp_path / "nope.csv"), "-o", str(target))
    assert missing.returncode == 2, missing.describe()
    assert "nope.csv: no such file" in missing.stderr

    unknown = run(home, "score", "-i", str(bad), "-o", str(target), "--model-version", "99")
    assert unknown.returncode == 3, unknown.describe()
    assert "no version 99" in unknown.stderr


def test_feedback_refuses_a_bad_file_whole(home: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,purchased\na,1\nb,yes\n")
    done = run(home, "feedback", "--file", str(labels))
    assert done.returncode == 1, done.describe()
    assert "purchased must be 0 or 1: line(s) 3" in done.stderr


def test_score_predict_and_batch_agree_on_every_row(
    home: Path, tmp_path: Path, raw_bytes: bytes
) -> None:
    from fastapi.testclient import TestClient

    from socialads.serving.app import create_app

    source = tmp_path / "users.csv"
    source.write_bytes(raw_bytes)
    target = tmp_path / "scores.parquet"
    done = run(home, "score", "-i", str(source), "-o", str(target))
    assert done.returncode == 0, done.describe()
    scores = pd.read_parquet(target).head(40)
    records = [
        {"Gender": g, "Age": float(a), "EstimatedSalary": float(s)}
        for g, a, s in zip(scores["Gender"], scores["Age"], scores["EstimatedSalary"], strict=True)
    ]
    settings = load_settings(SOCIALADS_HOME=str(home), SOCIALADS_PREDICTION_LOG=False)
    with TestClient(create_app(settings)) as client:
        deadline = pd.Timestamp.now() + pd.Timedelta(seconds=120)
        while client.get("/ready").status_code != 200:
            assert pd.Timestamp.now() < deadline, client.get("/ready").text
        batch = client.post("/predict/batch", json={"records": records}).json()["results"]
        single = [client.post("/predict", json=record).json() for record in records]
    for row, one, many in zip(scores.itertuples(), single, batch, strict=True):
        assert one["model_version"] == row.model_version
        assert one["prediction"] == many["prediction"] == row.prediction
        assert abs(one["probability"] - row.probability) <= 1e-9
        assert abs(many["probability"] - row.probability) <= 1e-9
