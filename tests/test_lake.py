"""The lake: one fsspec code path; raw files are never overwritten; outputs are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from socialads.data.lake import MANIFEST_KEY, RAW_KEY, TRAIN_KEY, Lake, bundled_dataset, sha256
from socialads.data.processed import read_processed, write_processed
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
    with pytest.raises(LakeError, match=r"processed/train\.csv"):
        lake.read_bytes(TRAIN_KEY)


def _prepare(lake: Lake) -> None:
    train, test = split(load_and_validate(bundled_dataset()), 0.2, 42)
    write_processed(
        lake,
        raw_sha256="x",
        raw_rows=400,
        train=train,
        test=test,
        scaler=fit_scaler(train),
        test_size=0.2,
        random_state=42,
    )


def test_processed_outputs_round_trip(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    _prepare(lake)
    train, test, manifest = read_processed(lake)
    assert (len(train), len(test)) == (320, 80)
    assert manifest.train_rows == 320
    assert lake.exists("artifacts/scaler.joblib")


def test_processed_outputs_changed_after_prep_are_refused(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    _prepare(lake)
    lake.write_bytes(TRAIN_KEY, lake.read_bytes(TRAIN_KEY) + b"Male,30,1000,1\n")
    with pytest.raises(DataValidationError, match="manifest"):
        read_processed(lake)


def test_without_a_manifest_there_is_no_processed_data(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    _prepare(lake)
    lake.delete(MANIFEST_KEY)
    with pytest.raises(LakeError, match="data-prep"):
        read_processed(lake)


def test_same_code_reads_and_writes_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The s3:// path through s3fs, against moto's S3 server (fast stand-in; the real
    S3-compatible server runs in the integration tests)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        from socialads.settings import Settings

        monkeypatch.setenv("SOCIALADS_S3_ENDPOINT_URL", f"http://{host}:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        monkeypatch.setenv("SOCIALADS_LAKE_URL", "s3://data")
        lake = Lake.from_settings(Settings())
        with pytest.raises(LakeError, match="s3://data"):
            lake.read_bytes(RAW_KEY)
        assert lake.ensure_root() is True
        assert lake.ensure_raw() is True
        assert lake.ensure_raw() is False
        assert sha256(lake.read_bytes(RAW_KEY)) == sha256(bundled_dataset())
    finally:
        server.stop()
