"""The data-prep outputs in the lake: processed splits, the scaler and their manifest.

Each data-prep run writes below its own prefix, ``processed/<run id>/``, and then switches
the pointer, ``processed/manifest.json``, to it (one PUT: S3 and the local lake replace a
key whole). Readers follow the pointer and check every file against the hashes it names,
so a run that dies half-way leaves the previous complete run in use and readers never see a
mix of two runs. The newest ``keep`` runs stay in the lake for lineage.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from socialads.data.lake import MANIFEST_KEY, PROCESSED, RAW_KEY, SCALER_KEY, Lake, sha256
from socialads.errors import DataValidationError, LakeError

if TYPE_CHECKING:
    import pandas as pd

    from socialads.data.production import ProductionLineage

log = logging.getLogger(__name__)

TRAIN_FILE = "train.csv"
TEST_FILE = "test.csv"
SCALER_FILE = "scaler.joblib"
RUN_MANIFEST_FILE = "manifest.json"


def run_key(run_id: str, filename: str) -> str:
    """Lake key of one output of data-prep run ``run_id``."""
    return f"{PROCESSED}/{run_id}/{filename}"


def new_run_id() -> str:
    """A data-prep run id that sorts by start time (UTC), unique across concurrent runs."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Manifest:
    """What one data-prep run wrote, where, with hashes for lineage and integrity."""

    raw_uri: str
    raw_sha256: str
    """Of the raw CSV's bytes; of a Parquet dataset's listing of parts, sizes and versions
    (:func:`socialads.data.raw.listing`)."""
    raw_rows: int
    train_rows: int
    test_rows: int
    train_sha256: str
    test_sha256: str
    scaler_sha256: str
    test_size: float
    random_state: int
    created_at: str
    run_id: str
    train_key: str
    test_key: str
    scaler_key: str
    production_rows: int = 0
    """Labelled production rows added to the training split (never to the holdout)."""
    production_rejected: int = 0
    production_first: str = ""
    production_last: str = ""
    production_sha256: str = ""
    """SHA-256 of their sorted request ids (see ``production.ProductionLineage``)."""

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
            "processed_run": self.run_id,
            "production_rows": self.production_rows,
        }

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a stored manifest (one this version wrote: older ones name no run)."""
        stored = json.loads(data)
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - set(stored))
        if missing:
            raise LakeError(
                f"{MANIFEST_KEY} predates per-run data-prep outputs (no {', '.join(missing)}); "
                "run the data-prep step again (`socialads train` runs both)"
            )
        return cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})


def frame_to_csv(frame: pd.DataFrame) -> bytes:
    """Deterministic CSV bytes of a frame (no index)."""
    text: str = frame.to_csv(index=False, lineterminator="\n")
    return text.encode()


def write_processed(
    lake: Lake,
    *,
    raw_sha256: str,
    raw_rows: int,
    raw_uri: str | None = None,
    train: pd.DataFrame,
    test: pd.DataFrame,
    scaler: Any,
    test_size: float,
    random_state: int,
    keep: int = 5,
    production: ProductionLineage | None = None,
) -> Manifest:
    """Write the splits and the scaler below a new run prefix, then switch the pointer to it
    (last), then remove all but the newest ``keep`` runs. ``raw_uri`` names the raw dataset
    (default: the lake's raw CSV); ``production`` names the labelled production rows ``train``
    includes."""
    import joblib

    run_id = new_run_id()
    buffer = io.BytesIO()
    joblib.dump(scaler, buffer)
    outputs = {
        run_key(run_id, TRAIN_FILE): frame_to_csv(train),
        run_key(run_id, TEST_FILE): frame_to_csv(test),
        run_key(run_id, SCALER_FILE): buffer.getvalue(),
    }
    for key, data in outputs.items():
        lake.write_bytes(key, data)
    manifest = Manifest(
        raw_uri=raw_uri or lake.uri(RAW_KEY),
        raw_sha256=raw_sha256,
        raw_rows=raw_rows,
        train_rows=len(train),
        test_rows=len(test),
        train_sha256=sha256(outputs[run_key(run_id, TRAIN_FILE)]),
        test_sha256=sha256(outputs[run_key(run_id, TEST_FILE)]),
        scaler_sha256=sha256(outputs[run_key(run_id, SCALER_FILE)]),
        test_size=test_size,
        random_state=random_state,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id,
        train_key=run_key(run_id, TRAIN_FILE),
        test_key=run_key(run_id, TEST_FILE),
        scaler_key=run_key(run_id, SCALER_FILE),
    )
    if production is not None:
        manifest = replace(
            manifest,
            production_rows=production.rows,
            production_rejected=production.rejected,
            production_first=production.first,
            production_last=production.last,
            production_sha256=production.sha256,
        )
    lake.write_bytes(run_key(run_id, RUN_MANIFEST_FILE), manifest.to_json())  # lineage
    lake.write_bytes(MANIFEST_KEY, manifest.to_json())  # the switch
    # The original project's layout, for tools that read it; the run's own copy, named by
    # the manifest, is the one training uses.
    lake.write_bytes(SCALER_KEY, outputs[run_key(run_id, SCALER_FILE)])
    prune_runs(lake, keep, current=run_id)
    return manifest


def prune_runs(lake: Lake, keep: int, *, current: str) -> list[str]:
    """Delete the run prefixes older than the newest ``keep`` (never ``current``); returns
    the deleted run ids. Failures are logged only: the new run is already published."""
    try:
        runs = lake.folders(PROCESSED)
        stale = [run for run in runs[: max(len(runs) - keep, 0)] if run != current]
        for run in stale:
            lake.delete_folder(f"{PROCESSED}/{run}")
    except LakeError as exc:
        log.warning("could not remove old data-prep runs: %s", exc)
        return []
    return stale


def read_processed(lake: Lake) -> tuple[pd.DataFrame, pd.DataFrame, Manifest]:
    """Read the splits of the run the pointer names, checking their hashes."""
    if not lake.exists(MANIFEST_KEY):
        raise LakeError(
            f"no processed data in the lake {lake.where()} (missing {MANIFEST_KEY}); "
            "run the data-prep step first (`socialads train` runs both)"
        )
    manifest = Manifest.from_json(lake.read_bytes(MANIFEST_KEY))
    return *_read_splits(lake, manifest), manifest


def read_run(lake: Lake, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame, Manifest]:
    """Read the splits of data-prep run ``run_id`` (current or not), checked against the
    hashes of that run's own manifest: what a model trained on that run saw."""
    key = run_key(run_id, RUN_MANIFEST_FILE)
    if not lake.exists(key):
        raise LakeError(
            f"the data-prep run {run_id} is no longer in the lake {lake.where()} (missing "
            f"{key}; SOCIALADS_PROCESSED_KEEP keeps the newest runs only): train again so "
            "that the champion's training data is in the lake"
        )
    manifest = Manifest.from_json(lake.read_bytes(key))
    return *_read_splits(lake, manifest), manifest


def _read_splits(lake: Lake, manifest: Manifest) -> tuple[pd.DataFrame, pd.DataFrame]:
    import pandas as pd

    from socialads.data.validation import validate

    frames = []
    for key, expected in (
        (manifest.train_key, manifest.train_sha256),
        (manifest.test_key, manifest.test_sha256),
    ):
        data = lake.read_bytes(key)
        if sha256(data) != expected:
            raise DataValidationError(
                [
                    f"{lake.uri(key)} does not match its manifest (changed after data-prep); "
                    "run data-prep again"
                ]
            )
        frames.append(validate(pd.read_csv(io.BytesIO(data), dtype=str)))
    return frames[0], frames[1]
