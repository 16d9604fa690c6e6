"""The raw dataset data-prep trains on: the lake's raw CSV, or what ``SOCIALADS_RAW_DATASET``
names (a lake key or a URL of a CSV file, a Parquet file or a folder of Parquet files).

A CSV is read whole and parsed as it always was (its bytes are hashed for lineage). Parquet
goes through ``pyarrow.dataset``: it reads the parts record batch by record batch (columns
pruned, no text parsing, any fsspec filesystem), so only the validated, typed columns of the
rows read so far are kept, never the whole file as text; each batch is validated by the same
rules as the CSV. Its lineage fingerprint is cheap: the SHA-256 of the parts' names, sizes and
versions (S3 ETag or modification time), not of their content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from socialads.data.lake import RAW_KEY, Lake, sha256
from socialads.data.schema import REQUIRED_COLUMNS
from socialads.errors import DataValidationError, LakeError

if TYPE_CHECKING:
    import pandas as pd

    from socialads.settings import Settings

BATCH_ROWS = 100_000
"""Rows validated at a time when reading Parquet."""

CSV_SUFFIX = ".csv"
PARQUET_SUFFIX = ".parquet"


@dataclass(frozen=True)
class RawDataset:
    """A located raw dataset: where, what format, its fingerprint and, for a CSV, its bytes."""

    uri: str
    kind: Literal["csv", "parquet"]
    sha256: str
    """SHA-256 of the CSV's bytes; for Parquet, of its parts' :func:`listing`."""
    size: int
    parts: tuple[str, ...] = ()
    """The Parquet files, as keys below :attr:`uri` (``""`` when it is the file itself)."""
    content: bytes | None = None

    def describe(self) -> str:
        """One line for the progress display and the run's log."""
        if self.kind == "csv":
            return f"{self.uri}, {self.size:,} bytes, sha256 {self.sha256[:12]}"
        return (
            f"{self.uri}, {len(self.parts)} Parquet file{'s' if len(self.parts) > 1 else ''}, "
            f"{self.size:,} bytes, listing sha256 {self.sha256[:12]}"
        )


def raw_url(settings: Settings, lake: Lake) -> str:
    """The URL of the raw dataset: a URL or absolute path as given, a lake key below the
    lake, the lake's raw CSV when unset."""
    named = settings.raw_dataset
    if not named:
        return lake.uri(RAW_KEY)
    if "://" in named or named.startswith("/"):
        return named.rstrip("/")
    return lake.uri(named.strip("/"))


def locate(settings: Settings, url: str) -> RawDataset:
    """Find the dataset at ``url`` and fingerprint it (a CSV is read here, Parquet is only
    listed)."""
    source = Lake.from_settings(settings, url)
    if url.lower().endswith(CSV_SUFFIX):
        data = source.read_bytes("")
        return RawDataset(uri=url, kind="csv", sha256=sha256(data), size=len(data), content=data)
    parts = [part for part in source.files() if part[0].endswith(PARQUET_SUFFIX) or not part[0]]
    if not parts:
        raise LakeError(
            f"the raw dataset {url}: no Parquet files there (name a *.csv or *.parquet file or "
            "a folder of *.parquet files)"
        )
    return RawDataset(
        uri=url,
        kind="parquet",
        sha256=hashlib.sha256(listing(parts).encode()).hexdigest(),
        size=sum(size for _, size, _ in parts),
        parts=tuple(key for key, _, _ in parts),
    )


def listing(parts: list[tuple[str, int, str]]) -> str:
    """What the fingerprint of a Parquet dataset hashes: a ``key<TAB>size<TAB>version`` line
    per part (version: S3's ETag, else the modification time; see :meth:`Lake.files`)."""
    return "".join(f"{key}\t{size}\t{version}\n" for key, size, version in parts)


def read_validated(
    settings: Settings, raw: RawDataset, batch_rows: int = BATCH_ROWS
) -> pd.DataFrame:
    """The dataset's rows, validated by the schema (:func:`validation.validate`'s rules):
    canonical Gender, numeric features, integer target."""
    from socialads.data.validation import load_and_validate

    if raw.kind == "csv":
        if raw.content is None:
            raise ValueError("a located CSV carries its content")
        return load_and_validate(raw.content)
    return _read_parquet(settings, raw, batch_rows)


def _read_parquet(settings: Settings, raw: RawDataset, batch_rows: int) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    from socialads.data.validation import check_classes, check_columns, validate

    source = Lake.from_settings(settings, raw.uri)
    try:
        dataset = ds.dataset(
            [source.path(key) for key in raw.parts], format="parquet", filesystem=source.fs
        )
        problems = check_columns(list(dataset.schema.names))
        if problems:
            raise DataValidationError([f"{raw.uri}: {p}" for p in problems])
        clean: list[pd.DataFrame] = []
        seen = 0
        for batch in dataset.to_batches(
            columns=list(REQUIRED_COLUMNS),
            batch_size=batch_rows,
            batch_readahead=1,
            fragment_readahead=1,
        ):
            if batch.num_rows == 0:
                continue
            frame = batch.to_pandas()
            frame.index += seen  # problems name the dataset's row numbers
            clean.append(validate(frame, min_rows_per_class=0))
            seen += batch.num_rows
    except (OSError, pa.ArrowInvalid) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LakeError(f"reading the raw dataset {raw.uri} failed: {detail}") from exc
    if not clean:
        raise DataValidationError([f"{raw.uri}: the dataset has no rows"])
    frame = pd.concat(clean, ignore_index=True)
    check_classes(frame)
    return frame
