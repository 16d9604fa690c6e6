"""SOCIALADS_RAW_DATASET: data-prep trains on a named dataset (a folder of Parquet parts here),
read and validated batch by batch; unset, it works on the lake's raw CSV exactly as before.

The data-prep flow's own task functions run here without a Prefect server (``.fn``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from testkit import publish_processed

from flows.data_prep import ingest_raw, split_data, validate_raw, write_outputs
from socialads.data.lake import RAW_KEY, Lake, sha256
from socialads.data.processed import Manifest, read_processed
from socialads.data.raw import locate, read_validated
from socialads.data.synth import synthesize
from socialads.errors import DataValidationError, LakeError
from socialads.settings import Settings


def data_prep(settings: Settings) -> tuple[Manifest, pd.DataFrame]:
    """The data-prep flow's steps (without the production rows) on ``settings``."""
    lake = Lake.from_settings(settings)
    raw = ingest_raw.fn(lake, settings)
    frame = validate_raw.fn(raw, settings)
    train, test = split_data.fn(frame, settings.test_size, settings.random_state)
    return write_outputs.fn(lake, raw, frame, train, test, settings), frame


def settings_for(tmp_path: Path, **fields: Any) -> Settings:
    return Settings(SOCIALADS_HOME=tmp_path / "home", **fields)  # type: ignore[call-arg]


def test_data_prep_trains_on_a_synthetic_parquet_dataset_in_the_lake(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SOCIALADS_RAW_DATASET="synthetic/ads")
    lake = Lake.from_settings(settings)
    synthesize(Lake(lake.uri("synthetic/ads")), 5000, seed=1, chunk_rows=2000)

    manifest, frame = data_prep(settings)

    assert len(frame) == 5000
    assert (manifest.raw_rows, manifest.train_rows, manifest.test_rows) == (5000, 4000, 1000)
    assert manifest.raw_uri == lake.uri("synthetic/ads")
    parts = sorted((tmp_path / "home/lake/synthetic/ads").iterdir())
    assert [p.name for p in parts] == [f"part-0000{i}.parquet" for i in range(3)]
    assert manifest.raw_sha256 == locate(settings, manifest.raw_uri).sha256, "stable"
    # A part rewritten with the same size (here: the same bytes) is a new fingerprint.
    os.utime(parts[0], ns=(1, 1))
    before = locate(settings, manifest.raw_uri).sha256
    parts[0].write_bytes(parts[0].read_bytes())
    os.utime(parts[0], ns=(2_000_000_000, 2_000_000_000))  # whatever the clock's resolution
    assert locate(settings, manifest.raw_uri).sha256 != before
    assert not lake.exists(RAW_KEY), "the bundled CSV is not put in the lake when not used"
    train, test, read = read_processed(lake)
    assert (len(train), len(test), read.run_id) == (4000, 1000, manifest.run_id)


def test_unset_it_is_the_lake_raw_csv_with_the_same_outputs_as_before(
    tmp_path: Path, raw_bytes: bytes
) -> None:
    settings = settings_for(tmp_path)
    lake = Lake.from_settings(settings)
    lake.ensure_raw()
    manifest, _ = data_prep(settings)
    # testkit.publish_processed is the data-prep of before: bytes parsed whole.
    _, _, before = publish_processed(lake, raw_bytes, settings)
    assert manifest.raw_uri == before.raw_uri == lake.uri(RAW_KEY)
    assert manifest.raw_sha256 == before.raw_sha256 == sha256(raw_bytes)
    assert (manifest.train_sha256, manifest.test_sha256) == (
        before.train_sha256,
        before.test_sha256,
    )


def test_a_csv_named_by_path_is_read_like_the_raw_csv(tmp_path: Path, raw_bytes: bytes) -> None:
    path = tmp_path / "mine.csv"
    path.write_bytes(raw_bytes)
    settings = settings_for(tmp_path, SOCIALADS_RAW_DATASET=str(path))
    raw = locate(settings, str(path))
    assert (raw.kind, raw.sha256) == ("csv", sha256(raw_bytes))
    assert len(read_validated(settings, raw)) == 400


def test_a_bad_value_in_a_later_batch_stops_data_prep_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    synthesize(Lake(str(folder)), 3000, seed=2, chunk_rows=1000)
    part = folder / "part-00002.parquet"
    frame = pq.read_table(part).to_pandas()
    frame.loc[10, "Age"] = 150
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), part)
    settings = settings_for(tmp_path, SOCIALADS_RAW_DATASET=folder.as_uri())
    raw = locate(settings, folder.as_uri())
    assert (raw.kind, len(raw.parts)) == ("parquet", 3)
    with pytest.raises(DataValidationError, match=r"'Age'.*between 18 and 100") as caught:
        read_validated(settings, raw, batch_rows=500)
    assert "2012" in str(caught.value), "the row (2,010 + header offset) is named"


def test_a_missing_dataset_or_column_is_a_named_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(LakeError, match="no Parquet files"):
        locate(settings, str(tmp_path / "nothing"))
    folder = tmp_path / "narrow"
    folder.mkdir()
    pq.write_table(pa.table({"Age": [30], "Purchased": [1]}), folder / "part-0.parquet")
    with pytest.raises(DataValidationError, match="missing column"):
        read_validated(settings, locate(settings, str(folder)))


@pytest.mark.usefixtures("moto_s3")
def test_synth_and_data_prep_work_on_s3(tmp_path: Path) -> None:
    """The same code on s3://."""
    settings = settings_for(
        tmp_path, SOCIALADS_LAKE_URL="s3://synth-lake", SOCIALADS_RAW_DATASET="synthetic/ads"
    )
    lake = Lake.from_settings(settings)
    lake.ensure_root()
    target = Lake.from_settings(settings, lake.uri("synthetic/ads"))
    assert synthesize(target, 2500, seed=4, chunk_rows=1000).parts == 3
    manifest, frame = data_prep(settings)
    assert (len(frame), manifest.raw_uri) == (2500, "s3://synth-lake/synthetic/ads")
    assert len(read_processed(lake)[0]) == 2000
