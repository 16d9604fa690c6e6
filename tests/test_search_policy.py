"""Candidates whose cost explodes with rows (knn, svm_rbf) are searched and fitted on a
stratified, seeded subsample above SOCIALADS_SEARCH_MAX_ROWS, and it is said: in the step's
progress, the leaderboard, the candidate's MLflow run. The other families use every row."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from socialads.data.schema import TARGET
from socialads.data.synth import fit_bundled
from socialads.features.preprocessing import split
from socialads.models.search import subsample
from socialads.models.training import leaderboard_rows, search_named
from socialads.progress import LOGGER
from socialads.settings import Settings

ROWS = 3000
LIMIT = 600


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, pd.DataFrame]:
    import numpy as np

    frame = fit_bundled().sample(ROWS, np.random.default_rng(5))
    return split(frame, 0.2, 42)


def settings_for(tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        SOCIALADS_HOME=tmp_path / "home", SOCIALADS_SEARCH_MAX_ROWS=LIMIT, SOCIALADS_CV_FOLDS=3
    )


def test_the_subsample_is_stratified_seeded_and_only_when_larger(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = splits
    picked = subsample(train, LIMIT, 42)
    assert len(picked) == LIMIT
    assert picked[TARGET].mean() == pytest.approx(train[TARGET].mean(), abs=0.005)
    assert picked.equals(subsample(train, LIMIT, 42))
    assert subsample(train, len(train), 42) is train


def test_knn_is_searched_on_the_subsample_and_says_so(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train, test = splits
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = search_named(settings_for(tmp_path), "knn", train, test)
    assert (result.rows, result.rows_available, result.subsampled) == (LIMIT, len(train), True)
    assert result.pipeline.n_features_in_ == 3
    assert result.pipeline[-1].n_samples_fit_ == LIMIT, "the final fit used the subsample"
    started, finished = (r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert f"subsample of {LIMIT} of {len(train):,} rows" in started
    assert f"subsample {LIMIT} of {len(train):,} rows" in finished
    row = leaderboard_rows([result], "f1")[0]
    assert (row["train_rows"], row["subsampled"]) == (LIMIT, True)


def test_other_families_train_on_every_row(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, test = splits
    result = search_named(settings_for(tmp_path), "gaussian_nb", train, test)
    assert (result.rows, result.subsampled) == (len(train), False)


def test_the_subsample_is_recorded_on_the_candidates_mlflow_run(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    from socialads.data.processed import Manifest
    from socialads.models import tracking

    train, test = splits
    settings = settings_for(tmp_path)
    result = search_named(settings, "knn", train, test)
    lineage = Manifest(
        raw_uri="file:///synthetic",
        raw_sha256="0" * 64,
        raw_rows=ROWS,
        train_rows=len(train),
        test_rows=len(test),
        train_sha256="",
        test_sha256="",
        scaler_sha256="",
        test_size=0.2,
        random_state=42,
        created_at="",
        run_id="r",
        train_key="",
        test_key="",
        scaler_key="",
    )
    client = tracking.connect(settings)
    experiment = tracking.ensure_experiment(client, settings)
    parent = tracking.start_parent_run(client, experiment, lineage, settings)
    child = tracking.log_candidate(client, experiment, parent, result, test, lineage, "f1")
    run = client.get_run(child).data
    assert run.params["search_rows"] == str(LIMIT)
    assert (
        run.tags[tracking.SUBSAMPLE_TAG]
        == f"{LIMIT} of {len(train)} training rows (search_max_rows)"
    )
    assert client.get_run(parent).data.params["search_max_rows"] == str(LIMIT)
