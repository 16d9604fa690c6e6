"""What production leaves in the lake: the prediction log and the feedback labels.

Layout (Hive-style date partitions, readable as is by pandas, pyarrow and DuckDB)::

    predictions/date=2026-12-02/part-<uuid>.parquet   one row per prediction (PREDICTION_SCHEMA)
    feedback/date=2026-12-02/part-<uuid>.parquet      one row per label received (FEEDBACK_SCHEMA)

Every writer (each API worker, each ``socialads score``) writes its own part files, so no two
processes ever write the same key. :func:`labelled_rows` joins the two on ``request_id``.
"""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from socialads.data.schema import AGE, GENDER, SALARY, TARGET

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    import pandas as pd
    import pyarrow as pa

    from socialads.data.lake import Lake

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
SOURCES = ("api", "batch", "score")
"""Where a prediction was made: ``/predict``, ``/predict/batch``, ``socialads score``."""

REQUEST_ID = "request_id"
TIMESTAMP = "timestamp"
SOURCE = "source"
MODEL_VERSION = "model_version"
PROBABILITY = "probability"
PREDICTION = "prediction"
RECEIVED_AT = "received_at"
PURCHASED = "purchased"

PREDICTION_COLUMNS: tuple[str, ...] = (
    REQUEST_ID,
    TIMESTAMP,
    SOURCE,
    MODEL_VERSION,
    GENDER,
    AGE,
    SALARY,
    PROBABILITY,
    PREDICTION,
)
FEEDBACK_COLUMNS: tuple[str, ...] = (REQUEST_ID, PURCHASED, RECEIVED_AT)


def prediction_schema() -> pa.Schema:
    """Columns of a prediction log part file."""
    import pyarrow as pa

    return pa.schema(
        [
            (REQUEST_ID, pa.string()),
            (TIMESTAMP, pa.timestamp("us", tz="UTC")),
            (SOURCE, pa.string()),
            (MODEL_VERSION, pa.string()),
            (GENDER, pa.string()),
            (AGE, pa.float64()),
            (SALARY, pa.float64()),
            (PROBABILITY, pa.float64()),
            (PREDICTION, pa.int8()),
        ]
    )


def feedback_schema() -> pa.Schema:
    """Columns of a feedback part file."""
    import pyarrow as pa

    return pa.schema(
        [
            (REQUEST_ID, pa.string()),
            (PURCHASED, pa.int8()),
            (RECEIVED_AT, pa.timestamp("us", tz="UTC")),
        ]
    )


@dataclass(frozen=True)
class Dataset:
    """One production dataset of the lake: its prefix, columns and time column."""

    prefix: str
    columns: tuple[str, ...]
    time_column: str
    schema: Callable[[], pa.Schema]
    """Its Arrow schema (built on demand: pyarrow is imported only when it is used)."""

    def part_key(self, day: date) -> str:
        """A new, unique part key in the partition of ``day``."""
        return f"{self.prefix}/date={day.isoformat()}/part-{uuid.uuid4().hex}.parquet"


PREDICTION_LOG = Dataset(PREDICTIONS, PREDICTION_COLUMNS, TIMESTAMP, prediction_schema)
FEEDBACK_LOG = Dataset(FEEDBACK, FEEDBACK_COLUMNS, RECEIVED_AT, feedback_schema)


def now() -> datetime:
    """The current time in UTC (what every record is stamped with)."""
    return datetime.now(UTC)


def table_of(dataset: Dataset, rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    """An Arrow table of ``rows`` (tuples in ``dataset.columns`` order)."""
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in dataset.columns]
    schema = dataset.schema()
    return pa.table(
        [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


def write_parts(lake: Lake, dataset: Dataset, table: pa.Table) -> list[str]:
    """Write ``table`` as one new part file per day it spans; returns the keys written.

    Each part is written whole (see :meth:`Lake.write_bytes`), so readers never see a part.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if table.num_rows == 0:
        return []
    days = pc.cast(table[dataset.time_column], "date32")
    keys = []
    for day in sorted(set(days.to_pylist())):
        part = table.filter(pc.equal(days, day))
        sink = io.BytesIO()
        pq.write_table(part, sink, compression="zstd")
        key = dataset.part_key(day)
        lake.write_bytes(key, sink.getvalue())
        keys.append(key)
    return keys


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def part_keys(lake: Lake, dataset: Dataset, days: Iterable[date] | None = None) -> list[str]:
    """Keys of the dataset's part files (of ``days`` only, when given), oldest day first."""
    keys = lake.glob(f"{dataset.prefix}/date=*/part-*.parquet")
    if days is None:
        return keys
    wanted = {f"date={day.isoformat()}" for day in days}
    return [key for key in keys if key.split("/")[1] in wanted]


def read(
    lake: Lake, dataset: Dataset, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """The dataset's rows with ``start <= time < end`` (every row when both are None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    days = None if start is None or end is None else _days(start, end)
    schema = dataset.schema()
    tables = [
        pq.read_table(io.BytesIO(lake.read_bytes(key)), schema=schema)
        for key in part_keys(lake, dataset, days)
    ]
    frame = pa.concat_tables(tables or [schema.empty_table()]).to_pandas()
    times = frame[dataset.time_column]
    keep = times.notna()
    if start is not None:
        keep &= times >= start
    if end is not None:
        keep &= times < end
    return frame[keep].sort_values(dataset.time_column, kind="stable").reset_index(drop=True)


def labelled_rows(lake: Lake, start: datetime | None, end: datetime) -> pd.DataFrame:
    """Predictions made in ``[start, end)`` (every one before ``end`` when ``start`` is None)
    that have a feedback label, with it as ``Purchased``.

    Labels may arrive any time after the prediction, so every label received from ``start``
    on is considered; when a request was labelled more than once, the latest label wins.
    """
    predictions = read(lake, PREDICTION_LOG, start, end)
    labels = read(lake, FEEDBACK_LOG, start, None)
    latest = labels.drop_duplicates(REQUEST_ID, keep="last")[[REQUEST_ID, PURCHASED]]
    joined = predictions.merge(latest, on=REQUEST_ID, how="inner", validate="many_to_one")
    joined = joined.rename(columns={PURCHASED: TARGET})
    joined[TARGET] = joined[TARGET].astype(int)
    return joined.reset_index(drop=True)


@dataclass(frozen=True)
class ProductionLineage:
    """Which labelled production rows a data-prep run added to its training split."""

    rows: int
    rejected: int
    """Labelled rows left out because a feature broke the schema (none, unless the lake was
    written by something other than socialads)."""
    first: str
    last: str
    """Timestamps (ISO 8601, UTC) of the first and last prediction added; empty for none."""
    sha256: str
    """SHA-256 of the added request ids, sorted, one per line: which rows went in."""


def training_rows(
    lake: Lake, end: datetime | None = None
) -> tuple[pd.DataFrame, ProductionLineage]:
    """The labelled production rows (log ⨝ feedback, latest label) made before ``end``, as
    training rows: one per request id, checked by the same schema and bounds as every other
    row (the invalid ones are counted and left out), columns as the validated raw data's."""
    import hashlib

    from socialads.data.schema import CLASSES, FEATURES
    from socialads.data.validation import check_records

    joined = labelled_rows(lake, None, end or now())
    joined = joined.drop_duplicates(REQUEST_ID, keep="last").reset_index(drop=True)
    clean, problems = check_records(joined[list(FEATURES)])
    if not problems.empty:
        log.warning(
            "%d labelled production rows break the schema and stay out of training, e.g. %s",
            len(problems),
            problems.iloc[0],
        )
    clean = clean[joined.loc[clean.index, TARGET].isin(CLASSES)]
    kept = joined.loc[clean.index]
    rows = clean.assign(**{TARGET: kept[TARGET].astype(int)})[[*FEATURES, TARGET]]
    ids = "\n".join(sorted(kept[REQUEST_ID].astype(str)))
    times = kept[TIMESTAMP]
    lineage = ProductionLineage(
        rows=len(rows),
        rejected=len(joined) - len(rows),
        first=times.min().isoformat() if len(rows) else "",
        last=times.max().isoformat() if len(rows) else "",
        sha256=hashlib.sha256(ids.encode()).hexdigest() if len(rows) else "",
    )
    return rows.reset_index(drop=True), lineage


REQUEST_ID_MAX_LENGTH = 128
"""Longest accepted request id (an incoming ``X-Request-ID`` longer than that is replaced)."""


def check_feedback(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """``(request_id, purchased)`` pairs of a labels table; raises naming the bad lines.

    Columns ``request_id`` and ``purchased`` (0 or 1); other columns are ignored.
    """
    import pandas as pd

    from socialads.errors import DataValidationError

    missing = [c for c in (REQUEST_ID, PURCHASED) if c not in frame.columns]
    if missing:
        raise DataValidationError([f"missing column(s) {missing}; found {list(frame.columns)}"])
    if frame.empty:
        raise DataValidationError(["the file has a header but no rows"])
    ids = frame[REQUEST_ID].astype("string").str.strip()
    bad_id = ids.isna() | (ids == "") | (ids.str.len() > REQUEST_ID_MAX_LENGTH)
    labels = pd.to_numeric(frame[PURCHASED], errors="coerce")
    bad_label = ~labels.isin([0, 1])
    problems = []
    for mask, rule in (
        (bad_id, f"{REQUEST_ID} must be 1 to {REQUEST_ID_MAX_LENGTH} characters"),
        (bad_label, f"{PURCHASED} must be 0 or 1"),
    ):
        if mask.any():
            lines = [str(int(i) + 2) for i in frame.index[mask][:5]]  # header is line 1
            more = f" and {int(mask.sum()) - 5} more" if mask.sum() > 5 else ""
            problems.append(f"{rule}: line(s) {', '.join(lines)}{more}")
    if problems:
        raise DataValidationError(problems)
    return list(zip(ids.tolist(), labels.astype(int).tolist(), strict=True))


def record_feedback(lake: Lake, labels: Sequence[tuple[str, int]]) -> int:
    """Write labels to the lake's feedback/ now (one part file); returns how many."""
    stamp = now()
    rows = [(request_id, purchased, stamp) for request_id, purchased in labels]
    write_parts(lake, FEEDBACK_LOG, table_of(FEEDBACK_LOG, rows))
    return len(rows)
