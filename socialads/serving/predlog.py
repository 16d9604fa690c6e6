"""The prediction log's writer: records buffered in memory, written to the lake off the hot path.

A request only appends a tuple to a list. A background thread writes what is buffered as a
part file (:func:`socialads.data.production.write_parts`) when ``flush_rows`` records are
waiting or every ``flush_seconds``; :meth:`BufferedLog.close` writes the rest. When the lake
cannot be written, the records stay buffered and the next flush tries again; the buffer holds
at most ``max_buffered`` records, and what arrives beyond that is dropped and counted, never
raised into a request. Each episode is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any

from socialads.data.lake import Lake
from socialads.data.production import (
    FEEDBACK_LOG,
    PREDICTION_LOG,
    REQUEST_ID_MAX_LENGTH,
    now,
    table_of,
    write_parts,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from socialads.data.production import Dataset
    from socialads.settings import Settings

log = logging.getLogger(__name__)


class BufferedLog:
    """Buffers records of one production dataset and writes them to the lake in the background."""

    def __init__(
        self,
        lake: Lake,
        dataset: Dataset,
        *,
        flush_rows: int,
        flush_seconds: float,
        max_buffered: int,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.lake = lake
        self.dataset = dataset
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffered = max(max_buffered, flush_rows)
        self.on_drop = on_drop
        self.dropped = 0
        """Records dropped since the start because the buffer was full."""
        self.written = 0
        """Records written to the lake since the start."""
        self._rows: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing_since: str | None = None
        self._dropped_in_episode = 0

    @property
    def buffered(self) -> int:
        """Records waiting to be written."""
        return len(self._rows)

    def add(self, *rows: tuple[Any, ...]) -> None:
        """Buffer records (tuples in the dataset's column order); never raises, never blocks."""
        with self._lock:
            room = self.max_buffered - len(self._rows)
            kept = rows if room >= len(rows) else rows[: max(room, 0)]
            self._rows.extend(kept)
            lost = len(rows) - len(kept)
            full = len(self._rows) >= self.flush_rows
        if lost:
            self._count_drop(lost)
        if full:
            self._wake.set()

    def start(self) -> None:
        """Start the background writer (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"socialads-{self.dataset.prefix}-log", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the background writer and write what is buffered (one attempt)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()
        if self._rows:
            log.error(
                "%s log: %d records could not be written to %s before the stop",
                self.dataset.prefix,
                len(self._rows),
                self.lake.where(),
            )

    def flush(self) -> bool:
        """Write what is buffered now; False (records kept) when the lake refused."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return True
        try:
            write_parts(self.lake, self.dataset, table_of(self.dataset, rows))
        except Exception as exc:
            with self._lock:
                # Back in front of what arrived meanwhile; when that overflows the buffer,
                # the newest records go, as they would have in add().
                merged = rows + self._rows
                self._rows = merged[: self.max_buffered]
                lost = len(merged) - len(self._rows)
            if lost > 0:
                self._count_drop(lost)
            self._failing(exc)
            return False
        self.written += len(rows)
        self._recovered()
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if not self._stop.is_set():
                self.flush()

    def _count_drop(self, count: int) -> None:
        self.dropped += count
        self._dropped_in_episode += count
        if self.on_drop is not None:
            self.on_drop(count)
        if self._dropped_in_episode == count:
            log.warning(
                "%s log: buffer full (%d records); dropping new records until the lake "
                "takes writes again",
                self.dataset.prefix,
                self.max_buffered,
            )

    def _failing(self, exc: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = str(exc)
            log.warning(
                "%s log: cannot write to %s (%s); records stay buffered (at most %d) and "
                "the next flush tries again",
                self.dataset.prefix,
                self.lake.where(),
                exc,
                self.max_buffered,
            )

    def _recovered(self) -> None:
        if self._failing_since is not None or self._dropped_in_episode:
            log.warning(
                "%s log: writing to %s again; %d records were dropped meanwhile",
                self.dataset.prefix,
                self.lake.where(),
                self._dropped_in_episode,
            )
        self._failing_since = None
        self._dropped_in_episode = 0


_ID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")


class RequestIds:
    """Request ids: the client's ``X-Request-ID`` when it is a sane id, else a new one.

    A sane id has 1 to :data:`~socialads.data.production.REQUEST_ID_MAX_LENGTH` characters
    among letters, digits and ``-_.:``: what a log, a URL and a CSV keep as is. A new id is 32
    hex digits, like a UUID4's: 16 random ones drawn once per instance (one per app, so per
    worker and per start), then a counter. A UUID4 per request costs a system call for its
    randomness, about 4 % of /predict's throughput here (``benchmarks/api_throughput.py``).
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def __call__(self, incoming: str | None = None) -> str:
        """``incoming`` when sane, else a new id."""
        if incoming and len(incoming) <= REQUEST_ID_MAX_LENGTH and set(incoming) <= _ID_CHARACTERS:
            return incoming
        # next() on a count is atomic under the GIL: threads get distinct ids.
        return f"{self._prefix}{next(self._count):016x}"


class ProductionLog:
    """What the API records: its predictions and the feedback labels it receives."""

    def __init__(self, settings: Settings, on_drop: Callable[[int], None] | None = None) -> None:
        lake = Lake.from_settings(settings)

        def buffered(dataset: Dataset) -> BufferedLog:
            return BufferedLog(
                lake,
                dataset,
                flush_rows=settings.prediction_log_flush_rows,
                flush_seconds=settings.prediction_log_flush_seconds,
                max_buffered=settings.prediction_log_max_buffered,
                on_drop=on_drop,
            )

        self.predictions = buffered(PREDICTION_LOG)
        self.feedback = buffered(FEEDBACK_LOG)

    def start(self) -> None:
        """Start both background writers."""
        self.predictions.start()
        self.feedback.start()

    def close(self) -> None:
        """Write everything buffered (graceful stop)."""
        self.predictions.close()
        self.feedback.close()

    def prediction(
        self,
        rid: str,
        source: str,
        version: str,
        record: tuple[str, float, float],
        probability: float,
        prediction: int,
    ) -> None:
        """Record one prediction (``record`` = Gender, Age, EstimatedSalary as normalised)."""
        self.predictions.add((rid, now(), source, version, *record, probability, prediction))

    def predictions_of(
        self,
        rids: Sequence[str],
        source: str,
        version: str,
        records: Sequence[tuple[str, float, float]],
        probabilities: Sequence[float],
        predictions: Sequence[int],
    ) -> None:
        """Record many predictions made at once."""
        at = now()
        self.predictions.add(
            *(
                (rid, at, source, version, *record, p1, cls)
                for rid, record, p1, cls in zip(
                    rids, records, probabilities, predictions, strict=True
                )
            )
        )

    def labels(self, labels: Sequence[tuple[str, int]]) -> None:
        """Record feedback labels ``(request_id, purchased)``."""
        at = now()
        self.feedback.add(*((rid, purchased, at) for rid, purchased in labels))
