"""Batch scoring: a file of users in (CSV or Parquet; local, ``file://`` or ``s3://``), Parquet out.

The file is read, checked and scored ``chunk_rows`` rows at a time, so memory stays bounded
whatever its size. Rows are checked by the rules of the API's records
(:func:`socialads.data.validation.check_records`); a bad row is not dropped silently but
written, with its row number and the reason, to a rejects file beside the output. The output
and the rejects are written to a temporary file and moved into place at the end, so a failed
run leaves nothing half-written at the target. Every scored row goes to the prediction log
(``source`` = ``score``) under the request id the output carries.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from socialads.data import production
from socialads.data.schema import AGE, FEATURES, GENDER, LABELS, SALARY
from socialads.data.validation import check_records
from socialads.errors import (
    NoChampionError,
    NoValidRowsError,
    ScoringInputError,
    SocialAdsError,
    UnknownVersionError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pandas as pd
    import pyarrow as pa
    from fsspec import AbstractFileSystem

    from socialads.data.lake import Lake
    from socialads.serving.engine import Engine
    from socialads.settings import Settings

log = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
ROW = "row"
REASON = "reason"
ADDED_COLUMNS = (
    production.REQUEST_ID,
    production.PREDICTION,
    "label",
    production.PROBABILITY,
    production.MODEL_VERSION,
    "scored_at",
)
"""What the output adds to each input row."""


@dataclass
class ScoreSummary:
    """What one scoring run did."""

    input: str
    output: str
    model_version: str
    rows_scored: int = 0
    rows_rejected: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    rejects: str | None = None
    """Where the rejected rows went (None when there were none)."""
    logged: bool = True
    """False when the prediction log could not be written (the scores are still valid)."""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``, the flow's artifact)."""
        return asdict(self)


def open_model(
    settings: Settings, *, alias: str | None = None, version: str | None = None
) -> tuple[str, Engine]:
    """The engine of a registered version, named directly or by alias (champion by default)."""
    from socialads.models.registry import alias_version, find_version, load_onnx, load_version
    from socialads.models.tracking import connect
    from socialads.serving.engine import build_engine

    client = connect(settings)
    if version is not None:
        if find_version(client, settings, version) is None:
            raise UnknownVersionError(
                f"no version {version} of {settings.model_name!r} in {settings.mlflow_uri}"
            )
    else:
        alias = alias or settings.champion_alias
        found = alias_version(client, settings, alias)
        if found is None:
            raise NoChampionError.of(alias, settings.model_name, settings.mlflow_uri)
        version = str(found.version)
    model, reason = load_onnx(client, settings, version)
    chosen = version
    engine = build_engine(
        model, lambda: load_version(client, settings, chosen), reason, settings.onnx_threads
    )
    return version, engine


def score(
    settings: Settings,
    source: str,
    target: str,
    *,
    alias: str | None = None,
    version: str | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> ScoreSummary:
    """Score ``source`` into ``target`` with a registered model (the champion by default),
    logging the predictions unless the settings turn the log off."""
    from socialads.data.lake import Lake

    check_names(source, target)
    chosen, engine = open_model(settings, alias=alias, version=version)
    return score_file(
        settings,
        source,
        target,
        version=chosen,
        engine=engine,
        log_lake=Lake.from_settings(settings) if settings.prediction_log else None,
        on_progress=on_progress,
    )


def _split_url(url: str, settings: Settings) -> tuple[AbstractFileSystem, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **settings.storage_options(url))
    return fs, str(path)


def _format(url: str) -> str:
    name = url.lower().rsplit("/", 1)[-1]
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise ScoringInputError(
        f"{url}: unknown format; name the file *.csv (optionally .gz/.bz2/.zst) or *.parquet"
    )


def _chunks(
    fs: AbstractFileSystem, path: str, kind: str, chunk_rows: int
) -> tuple[Iterator[pd.DataFrame], int | None]:
    """The input's chunks and its row count when known without reading it all."""
    import pandas as pd
    import pyarrow.parquet as pq

    if kind == "parquet":
        handle = fs.open(path, "rb")
        parquet = pq.ParquetFile(handle)

        def batches() -> Iterator[pd.DataFrame]:
            with handle:
                for batch in parquet.iter_batches(batch_size=chunk_rows):
                    yield batch.to_pandas()

        return batches(), parquet.metadata.num_rows
    compression = "infer" if path.endswith(".csv") else path.rsplit(".", 1)[-1]
    compression = {"gz": "gzip", "bz2": "bz2", "zst": "zstd"}.get(compression, compression)
    with fs.open(path, "rb", compression=None if compression == "infer" else compression) as f:
        header = list(pd.read_csv(f, nrows=0).columns)
    # The features' types are inferred (the C parser reads numbers fast); every other column
    # is kept as text so that all chunks share one schema.
    text_columns = {c: "string" for c in header if c.strip() not in FEATURES}

    def frames() -> Iterator[pd.DataFrame]:
        with fs.open(path, "rb", compression=None if compression == "infer" else compression) as f:
            reader = pd.read_csv(f, chunksize=chunk_rows, dtype=text_columns, skipinitialspace=True)
            for frame in reader:
                frame.columns = [str(c).strip() for c in frame.columns]
                yield frame

    return frames(), None


def score_file(
    settings: Settings,
    source: str,
    target: str,
    *,
    version: str,
    engine: Engine,
    log_lake: Lake | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> ScoreSummary:
    """Score ``source`` into ``target`` (Parquet) with ``engine`` (model ``version``).

    Raises :class:`ScoringInputError` when the input is missing, unreadable or of an unknown
    format, and :class:`NoValidRowsError` when no row is valid (the rejects are written).
    """
    started = time.perf_counter()
    check_names(source, target)
    chunks, total = _open_input(settings, source)
    out_fs, out_path = _split_url(target, settings)
    rejects_target = _rejects_name(target)
    rejects_path = _split_url(rejects_target, settings)[1]
    summary = ScoreSummary(input=source, output=target, model_version=version)
    with tempfile.TemporaryDirectory(prefix="socialads-score-") as tmp:
        scored_file, rejects_file = Path(tmp) / "scores.parquet", Path(tmp) / "rejects.csv"
        _score_chunks(
            chunks, engine, summary, scored_file, rejects_file, log_lake, total, on_progress
        )
        if summary.rows_rejected:
            _publish(rejects_file, out_fs, rejects_path)
            summary.rejects = rejects_target
        elif out_fs.exists(rejects_path):  # an earlier run's, which would now mislead
            out_fs.rm_file(rejects_path)
        if summary.rows_scored == 0:
            where = f"; see {rejects_target}" if summary.rejects else ""
            raise NoValidRowsError(
                f"{source}: no valid row to score ({summary.rows_rejected} rejected){where}"
            )
        _publish(scored_file, out_fs, out_path)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def check_names(source: str, target: str) -> None:
    """Refuse an input or output whose name says no supported format (before any work)."""
    _format(source)
    if not target.lower().endswith(PARQUET_SUFFIXES):
        raise ScoringInputError(f"{target}: the output is Parquet; name it *.parquet")


def _open_input(settings: Settings, source: str) -> tuple[Iterator[pd.DataFrame], int | None]:
    """The input's chunks (and row count when known), or a named error."""
    kind = _format(source)
    fs, path = _split_url(source, settings)
    try:
        if not fs.isfile(path):
            raise ScoringInputError(f"{source}: no such file")
        chunks, total = _chunks(fs, path, kind, settings.score_chunk_rows)
    except SocialAdsError:
        raise
    except Exception as exc:
        raise ScoringInputError(f"{source}: cannot be read: {exc}") from exc
    return _read_all(chunks, source), total


def _score_chunks(
    chunks: Iterator[pd.DataFrame],
    engine: Engine,
    summary: ScoreSummary,
    scored_file: Path,
    rejects_file: Path,
    log_lake: Lake | None,
    total: int | None,
    on_progress: Callable[[int, int | None], None] | None,
) -> None:
    """Check, score and write each chunk; the counts go into ``summary``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    run = uuid.uuid4().hex[:16]
    labels: Counter[str] = Counter()
    done = 0
    writer: pq.ParquetWriter | None = None
    try:
        for frame in chunks:
            frame.index = range(done + 1, done + 1 + len(frame))  # 1-based row numbers
            clean, reasons = check_records(frame)
            if len(reasons):
                _append_rejects(rejects_file, frame, reasons)
                summary.rows_rejected += len(reasons)
            if len(clean):
                table = _score(frame, clean, engine, summary.model_version, run)
                if writer is None:
                    writer = pq.ParquetWriter(scored_file, table.schema)
                writer.write_table(table.cast(writer.schema))
                summary.rows_scored += table.num_rows
                ones = int(pc.sum(table[production.PREDICTION]).as_py() or 0)
                labels.update({LABELS[1]: ones, LABELS[0]: table.num_rows - ones})
                if log_lake is not None and summary.logged:
                    summary.logged = _log(log_lake, table)
            done += len(frame)
            if on_progress is not None:
                on_progress(done, total)
    finally:
        if writer is not None:
            writer.close()
    summary.labels = {label: labels.get(label, 0) for label in LABELS.values()}


def _read_all(chunks: Iterator[pd.DataFrame], source: str) -> Iterator[pd.DataFrame]:
    """The chunks, with a read failure in the middle as a named error."""
    while True:
        try:
            frame = next(chunks)
        except StopIteration:
            return
        except Exception as exc:
            raise ScoringInputError(f"{source}: cannot be read: {exc}") from exc
        yield frame


def _score(
    frame: pd.DataFrame, clean: pd.DataFrame, engine: Engine, version: str, run: str
) -> pa.Table:
    """The output rows of the valid rows: input columns (features cleaned) + the scores."""
    import pandas as pd
    import pyarrow as pa

    classes, p1 = engine.predict_many(
        clean[GENDER].tolist(),
        clean[AGE].to_numpy(dtype=np.float64),
        clean[SALARY].to_numpy(dtype=np.float64),
    )
    import pyarrow.compute as pc

    out = frame.loc[clean.index].copy()
    for column in FEATURES:
        out[column] = clean[column]
    table = pa.Table.from_pandas(out, preserve_index=False)
    rows = pa.array(clean.index.to_numpy()).cast(pa.string())
    added = {
        production.REQUEST_ID: pc.binary_join_element_wise(run, rows, "-"),
        production.PREDICTION: pa.array(classes.astype(np.int8)),
        "label": pa.DictionaryArray.from_arrays(
            pa.array(classes.astype(np.int8)), pa.array([LABELS[0], LABELS[1]])
        ).cast(pa.string()),
        production.PROBABILITY: pa.array(p1, pa.float64()),
        production.MODEL_VERSION: pa.repeat(version, len(clean)),
        "scored_at": pa.repeat(
            pa.scalar(pd.Timestamp.now(tz="UTC"), pa.timestamp("us", "UTC")), len(clean)
        ),
    }
    for name, values in added.items():
        table = table.append_column(name, values)
    return table


def _log(lake: Lake, scored: pa.Table) -> bool:
    """Put the chunk's predictions in the prediction log; False (logged once) on failure."""
    import pyarrow as pa

    count = scored.num_rows
    columns = {
        production.REQUEST_ID: scored[production.REQUEST_ID],
        production.TIMESTAMP: scored["scored_at"],
        production.SOURCE: pa.array(["score"] * count),
        production.MODEL_VERSION: scored[production.MODEL_VERSION],
        GENDER: scored[GENDER],
        AGE: scored[AGE],
        SALARY: scored[SALARY],
        production.PROBABILITY: scored[production.PROBABILITY],
        production.PREDICTION: scored[production.PREDICTION],
    }
    schema = production.PREDICTION_LOG.schema()
    try:
        table = pa.table(columns).cast(schema)
        production.write_parts(lake, production.PREDICTION_LOG, table)
    except Exception as exc:
        log.warning(
            "the prediction log could not be written to %s (%s); the scores are written, "
            "the rest of this run is not logged",
            lake.where(),
            exc,
        )
        return False
    return True


def _rejects_name(target: str) -> str:
    stem = target[: -len(".parquet")] if target.lower().endswith(".parquet") else target
    stem = stem[: -len(".pq")] if stem.lower().endswith(".pq") else stem
    return f"{stem}.rejects.csv"


def _append_rejects(path: Path, frame: pd.DataFrame, reasons: pd.Series) -> None:
    import pandas as pd

    rows = pd.DataFrame({ROW: reasons.index, REASON: reasons.to_numpy()})
    rows = rows.join(frame.loc[reasons.index].reset_index(drop=True))
    rows.to_csv(path, mode="a", header=not path.exists(), index=False)


def _publish(local: Path, fs: AbstractFileSystem, path: str) -> None:
    """Move a finished local file to ``path`` whole: a reader sees the old file or the new."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        folder = Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f".{Path(path).name}.tmp-{uuid.uuid4().hex}"
        shutil.copyfile(local, staged)
        os.replace(staged, path)
    else:  # an object store's PUT (multipart included) becomes visible only when complete
        fs.put_file(str(local), path)


def read_table(settings: Settings, source: str) -> pd.DataFrame:
    """A whole (small) CSV or Parquet file: a path, ``file://`` or ``s3://`` URL."""
    import pandas as pd

    frames, _ = _open_input(settings, source)
    chunks = list(frames)
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()


INCOMING = "incoming"
SCORES = "scores"


def pending_inputs(lake: Lake) -> list[tuple[str, str]]:
    """``(input URL, output URL)`` of each file under the lake's incoming/ not yet scored.

    ``incoming/<name>.csv`` (or .parquet) is scored into ``scores/<name>.parquet``; a file
    whose output exists is skipped (delete the output to score it again).
    """
    done = {key.rsplit("/", 1)[-1] for key in lake.glob(f"{SCORES}/*.parquet")}
    pending = []
    for key in lake.glob(f"{INCOMING}/*"):
        name = key.rsplit("/", 1)[-1]
        if not name.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
            continue
        output = f"{_stem(name)}.parquet"
        if output not in done:
            pending.append((lake.uri(key), lake.uri(f"{SCORES}/{output}")))
    return pending


def default_output(lake: Lake, source: str) -> str:
    """Where the score flow writes the scores of ``source``: ``scores/<name>.parquet``."""
    return lake.uri(f"{SCORES}/{_stem(source.rsplit('/', 1)[-1])}.parquet")


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in CSV_SUFFIXES + PARQUET_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def summary_markdown(summaries: list[ScoreSummary]) -> str:
    """A markdown table of scoring runs (the score flow's Prefect artifact)."""
    lines = [
        "| input | output | version | scored | rejected | COMPRA | NO COMPRA |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.input} | {s.output} | {s.model_version} | {s.rows_scored:,} | "
            f"{s.rows_rejected:,} | {s.labels.get(LABELS[1], 0):,} | "
            f"{s.labels.get(LABELS[0], 0):,} |"
        )
    if not summaries:
        lines.append("| nothing to score | | | | | | |")
    return "\n".join(lines)
