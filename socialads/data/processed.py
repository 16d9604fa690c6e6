"""The data-prep outputs in the lake: processed splits, the scaler and their manifest.

The manifest is written last and names the SHA-256 of every output, so a run that died
half-way leaves nothing a later training would take for valid.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from socialads.data.lake import MANIFEST_KEY, RAW_KEY, SCALER_KEY, TEST_KEY, TRAIN_KEY, Lake, sha256
from socialads.errors import DataValidationError, LakeError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Manifest:
    """What one data-prep run wrote, with hashes for lineage and integrity."""

    raw_uri: str
    raw_sha256: str
    raw_rows: int
    train_rows: int
    test_rows: int
    train_sha256: str
    test_sha256: str
    scaler_sha256: str
    test_size: float
    random_state: int
    created_at: str

    def to_json(self) -> bytes:
        """Serialised form stored in the lake."""
        return json.dumps(asdict(self), indent=2).encode()

    def as_params(self) -> dict[str, Any]:
        """Lineage as MLflow run parameters."""
        return {
            "dataset_uri": self.raw_uri,
            "dataset_sha256": self.raw_sha256,
            "dataset_rows": self.raw_rows,
            "train_rows": self.train_rows,
            "test_rows": self.test_rows,
            "test_size": self.test_size,
            "random_state": self.random_state,
        }

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a stored manifest."""
        return cls(**json.loads(data))


def frame_to_csv(frame: pd.DataFrame) -> bytes:
    """Deterministic CSV bytes of a frame (no index)."""
    return frame.to_csv(index=False, lineterminator="\n").encode()


def write_processed(
    lake: Lake,
    *,
    raw_sha256: str,
    raw_rows: int,
    train: pd.DataFrame,
    test: pd.DataFrame,
    scaler: Any,
    test_size: float,
    random_state: int,
) -> Manifest:
    """Write the splits, the scaler and (last) the manifest."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(scaler, buffer)
    outputs = {
        TRAIN_KEY: frame_to_csv(train),
        TEST_KEY: frame_to_csv(test),
        SCALER_KEY: buffer.getvalue(),
    }
    for key, data in outputs.items():
        lake.write_bytes(key, data)
    manifest = Manifest(
        raw_uri=lake.uri(RAW_KEY),
        raw_sha256=raw_sha256,
        raw_rows=raw_rows,
        train_rows=len(train),
        test_rows=len(test),
        train_sha256=sha256(outputs[TRAIN_KEY]),
        test_sha256=sha256(outputs[TEST_KEY]),
        scaler_sha256=sha256(outputs[SCALER_KEY]),
        test_size=test_size,
        random_state=random_state,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    lake.write_bytes(MANIFEST_KEY, manifest.to_json())
    return manifest


def read_processed(lake: Lake) -> tuple[pd.DataFrame, pd.DataFrame, Manifest]:
    """Read the splits named by the manifest, checking their hashes."""
    import pandas as pd

    from socialads.data.validation import validate

    if not lake.exists(MANIFEST_KEY):
        raise LakeError(
            f"no processed data in the lake {lake.where()} (missing {MANIFEST_KEY}); "
            "run the data-prep step first (`socialads train` runs both)"
        )
    manifest = Manifest.from_json(lake.read_bytes(MANIFEST_KEY))
    frames = []
    for key, expected in ((TRAIN_KEY, manifest.train_sha256), (TEST_KEY, manifest.test_sha256)):
        data = lake.read_bytes(key)
        if sha256(data) != expected:
            raise DataValidationError(
                [
                    f"{lake.uri(key)} does not match its manifest (changed after data-prep); "
                    "run data-prep again"
                ]
            )
        frames.append(validate(pd.read_csv(io.BytesIO(data), dtype=str)))
    return frames[0], frames[1], manifest
