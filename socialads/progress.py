"""Progress of long work as log records, so that any edge can show it.

A step (read the raw file, search one candidate, register, ...) starts and then finishes or
fails; each of the three is an INFO (WARNING when it fails) record of the
``socialads.progress`` logger whose ``step`` attribute is a :class:`Step`. The CLI draws them
with Rich; Prefect, which forwards the ``socialads`` loggers, shows their messages in the run's
log. The library only emits; it never decides how progress looks.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator

LOGGER = "socialads.progress"

Status = Literal["started", "finished", "failed"]


@dataclass(frozen=True)
class Step:
    """One event of one step."""

    key: str
    """Stable id of the step, e.g. ``search:knn``."""
    group: str
    """The stage it belongs to: ``data-prep``, ``search``, ``register``."""
    title: str
    status: Status = "started"
    detail: str = ""


class StepNote:
    """What the body of :func:`step` may say about its outcome."""

    def __init__(self) -> None:
        self.detail = ""


def emit(event: Step) -> None:
    """Log ``event`` on the progress logger (the record's ``step`` attribute holds it)."""
    level = logging.WARNING if event.status == "failed" else logging.INFO
    words = {"started": "started", "finished": "done", "failed": "failed"}[event.status]
    logging.getLogger(LOGGER).log(
        level,
        "%s %s: %s%s",
        event.group,
        event.title,
        words,
        f" ({event.detail})" if event.detail else "",
        extra={"step": event},
    )


@contextmanager
def step(key: str, group: str, title: str, detail: str = "") -> Iterator[StepNote]:
    """Report a step around the ``with`` body: started, then finished with the note's detail,
    or failed with the error's first line (the error propagates)."""
    started = Step(key=key, group=group, title=title, detail=detail)
    emit(started)
    note = StepNote()
    try:
        yield note
    except BaseException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        emit(replace(started, status="failed", detail=first))
        raise
    emit(replace(started, status="finished", detail=note.detail))
