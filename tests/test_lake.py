"""The lake: one fsspec code path; raw files are never overwritten; outputs are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from socialads.data.lake import (
    MANIFEST_KEY,
    PROCESSED,
    RAW_KEY,
    SCALER_KEY,
    Lake,
    bundled_dataset,
    sha256,
)
from socialads.data.processed import Manifest, read_processed, write_processed
from socialads.data.validation import load_and_validate
from socialads.errors import DataValidationError, LakeError
from socialads.features.preprocessing import fit_scaler, split


def test_bundled_dataset_is_the_published_file() -> None:
    data = bundled_dataset()
    # pragma: allowlist nextline secret (the dataset's published hash)
    published = "4ca55deb56597deb411ec68cb0d0c5718ff8600a55219b5fd8c507b49c2e1559"
    assert sha256(data) == published
    assert b"\r\n" in data


def test_ensure_raw_uploads_once_and_never_overwrites(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    assert lake.ensure_raw() is True
    assert lake.read_bytes(RAW_KEY) == bundled_dataset()
    lake.write_bytes(RAW_KEY, b"user's own file")
    assert lake.ensure_raw() is False
    assert lake.read_bytes(RAW_KEY) == b"user's own file"


def test_missing_key_is_a_lake_error_naming_it(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    with pytest.raises(LakeError, match=r"processed/x/train\.csv"):
        lake.read_bytes("processed/x/train.csv")


def _prepare(lake: Lake, random_state: int = 42, keep: int = 5) -> Manifest:
    train, test = split(load_and_validate(bundled_dataset()), 0.2, random_state)
    return write_processed(
        lake,
        raw_sha256="x",
        raw_rows=400,
        train=train,
        test=test,
        scaler=fit_scaler(train),
        test_size=0.2,
        random_state=random_state,
        keep=keep,
    )


def test_processed_outputs_round_trip(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    written = _prepare(lake)
    train, test, manifest = read_processed(lake)
    assert (len(train), len(test)) == (320, 80)
    assert manifest == written
    assert manifest.train_key == f"{PROCESSED}/{manifest.run_id}/train.csv"
    assert sha256(lake.read_bytes(manifest.scaler_key)) == manifest.scaler_sha256
    # The run's own copy of its manifest stays beside its outputs, for lineage.
    assert lake.read_bytes(f"{PROCESSED}/{manifest.run_id}/manifest.json") == manifest.to_json()
    # The original project's key holds the current run's scaler.
    assert lake.read_bytes(SCALER_KEY) == lake.read_bytes(manifest.scaler_key)


def test_processed_outputs_changed_after_prep_are_refused(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    key = _prepare(lake).train_key
    lake.write_bytes(key, lake.read_bytes(key) + b"Male,30,1000,1\n")
    with pytest.raises(DataValidationError, match="manifest"):
        read_processed(lake)


def test_a_run_that_dies_before_the_switch_leaves_the_previous_run_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    _prepare(lake, random_state=42)
    train_before, test_before, manifest_before = read_processed(lake)
    write = lake.write_bytes

    def dies_at_the_test_split(key: str, data: bytes) -> None:
        if key.endswith("/test.csv"):
            raise LakeError("the lake went away")
        write(key, data)

    monkeypatch.setattr(lake, "write_bytes", dies_at_the_test_split)
    with pytest.raises(LakeError):
        _prepare(lake, random_state=7)  # another split: other bytes
    monkeypatch.undo()

    train, test, manifest = read_processed(lake)
    assert manifest == manifest_before
    assert train.equals(train_before) and test.equals(test_before)
    # The dead run's train split is in the lake, under its own prefix, and unused.
    assert len(lake.folders(PROCESSED)) == 2


def test_old_runs_are_removed_beyond_keep(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    runs = [_prepare(lake, random_state=seed, keep=2).run_id for seed in (1, 2, 3, 4)]
    assert lake.folders(PROCESSED) == runs[-2:]
    assert read_processed(lake)[2].run_id == runs[-1]


def test_a_manifest_of_the_old_layout_asks_for_data_prep(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    old = {"raw_uri": "x", "raw_sha256": "x", "train_sha256": "x", "test_sha256": "x"}
    lake.write_bytes(MANIFEST_KEY, json.dumps(old).encode())
    with pytest.raises(LakeError, match="run the data-prep step again"):
        read_processed(lake)


def test_without_a_manifest_there_is_no_processed_data(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    _prepare(lake)
    lake.delete(MANIFEST_KEY)
    with pytest.raises(LakeError, match="data-prep"):
        read_processed(lake)


@pytest.mark.usefixtures("moto_s3")
def test_same_code_reads_and_writes_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The s3:// path through s3fs."""
    from socialads.settings import Settings

    monkeypatch.setenv("SOCIALADS_LAKE_URL", "s3://data")
    lake = Lake.from_settings(Settings())
    with pytest.raises(LakeError, match="s3://data"):
        lake.read_bytes(RAW_KEY)
    assert lake.ensure_root() is True
    assert lake.ensure_raw() is True
    assert lake.ensure_raw() is False
    assert sha256(lake.read_bytes(RAW_KEY)) == sha256(bundled_dataset())
    runs = [_prepare(lake, random_state=seed, keep=1).run_id for seed in (1, 2)]
    assert lake.folders(PROCESSED) == runs[-1:]
    assert read_processed(lake)[2].run_id == runs[-1]
