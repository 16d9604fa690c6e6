"""What the command line shows while it works: live steps, the leaderboard, the log file.

The library reports its steps as records of :data:`socialads.progress.LOGGER`;
:class:`StepDisplay` draws them with Rich on a terminal. :func:`noise_to_file` sends everything
else the run prints (Prefect's and MLflow's console output, warnings) to a log file, so the
terminal shows the work and the result, and the file explains a failure.
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from socialads.progress import LOGGER, Step

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class StepDisplay(logging.Handler):
    """Draws :class:`~socialads.progress.Step` records live: a spinner per running step, a
    line per finished one, a bar over the candidates' searches; and shows the library's
    warnings."""

    def __init__(self, console: Console, searches: int) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[count]}", style="dim"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._running: dict[str, TaskID] = {}
        self._searches = self.progress.add_task(
            "candidates searched", total=searches, count=f"0/{searches}"
        )

    def __enter__(self) -> StepDisplay:
        self.progress.start()
        logging.getLogger("socialads").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("socialads").removeHandler(self)
        self.progress.stop()

    def emit(self, record: logging.LogRecord) -> None:
        """Draw a step event, or print a warning of the library."""
        event = getattr(record, "step", None)
        if isinstance(event, Step):
            self._draw(event)
        elif record.levelno >= logging.WARNING and record.name != LOGGER:
            self.progress.console.print(f"[yellow]! {escape(record.getMessage())}")

    def _draw(self, event: Step) -> None:
        label = f"[dim]{event.group}[/] {escape(event.title)}"
        if event.status == "started":
            detail = f" [dim]{escape(event.detail)}[/]" if event.detail else ""
            self._running[event.key] = self.progress.add_task(label + detail, total=None, count="")
            return
        task = self._running.pop(event.key, None)
        if task is not None:
            self.progress.remove_task(task)
        mark = "[green]✓[/]" if event.status == "finished" else "[red]✗[/]"
        self.progress.console.print(f"{mark} {label}  {escape(event.detail)}")
        if event.group == "search" and event.status == "finished":
            self.progress.advance(self._searches)
            done = self.progress.tasks[self._searches].completed
            total = self.progress.tasks[self._searches].total
            self.progress.update(self._searches, count=f"{done:g}/{total:g}")


@contextmanager
def noise_to_file(path: Path) -> Iterator[None]:
    """Send what would reach the terminal during the body (console log handlers, prints to
    stdout and stderr, warnings) to ``path`` (overwritten) instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    terminal = {id(sys.stdout), id(sys.stderr), id(sys.__stdout__), id(sys.__stderr__)}
    with ExitStack() as stack:
        sink = stack.enter_context(path.open("w", encoding="utf-8"))
        to_file = logging.StreamHandler(sink)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        swapped: list[tuple[logging.Logger, logging.Handler]] = []
        for logger in _loggers():
            for handler in list(logger.handlers):
                stream = getattr(handler, "stream", None)
                if isinstance(handler, logging.StreamHandler) and id(stream) in terminal:
                    logger.removeHandler(handler)
                    swapped.append((logger, handler))
                    if to_file not in logger.handlers:
                        logger.addHandler(to_file)
        try:
            stack.enter_context(redirect_stdout(sink))
            stack.enter_context(redirect_stderr(sink))
            yield
        finally:
            for logger, handler in swapped:
                logger.removeHandler(to_file)
                logger.addHandler(handler)
            # Handlers made during the body (a library's first import) took the redirected
            # stream as their terminal: give them the real one back before the file closes.
            for logger in _loggers():
                for handler in logger.handlers:
                    if isinstance(handler, logging.StreamHandler) and handler.stream is sink:
                        handler.setStream(sys.__stderr__)


def _loggers() -> list[logging.Logger]:
    """The root logger and every logger made so far."""
    made = logging.Logger.manager.loggerDict.values()
    return [logging.getLogger(), *(logger for logger in made if isinstance(logger, logging.Logger))]


def leaderboard_table(report: dict[str, Any]) -> Table:
    """The training report's leaderboard as a Rich table."""
    metric = report["metric"]
    table = Table(title=f"Leaderboard (ranked by cv {metric})", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("candidate", no_wrap=True)
    for name in (f"cv {metric}", "acc", "prec", "recall", "f1", "auc"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("parameters", overflow="fold")
    for row in report["leaderboard"]:
        best = row["rank"] == 1
        table.add_row(
            str(row["rank"]),
            row["candidate"],
            f"{row[f'cv_{metric}']:.4f}",
            *(f"{row[key]:.3f}" for key in ("accuracy", "precision", "recall", "f1", "roc_auc")),
            ", ".join(f"{k}={v}" for k, v in row["params"].items())
            + (f" (subsample of {row['train_rows']:,} rows)" if row.get("subsampled") else ""),
            style="bold" if best else None,
        )
    return table


def row_progress(hidden: bool = False) -> Progress:
    """A bar of rows done (of a total, once known) on stderr; drawn only on a terminal and
    unless ``hidden``, gone when it ends."""
    console = Console(stderr=True)
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=hidden or not console.is_terminal,
        transient=True,
    )


def stderr_console() -> Console:
    """A console on the process's stderr as it is now (before any redirection)."""
    return Console(file=sys.stderr, stderr=True)
