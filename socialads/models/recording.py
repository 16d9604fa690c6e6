"""A training's MLflow record, written by a helper process while the searches run.

The searches keep one core busy. MLflow's, matplotlib's and skops' imports (seconds on a
small machine), each candidate's run and figures, the model's serialisation and the gate
would otherwise all come after them. A :class:`Recorder` spawns one helper process (spawned:
it shares no threads and no half-imported modules with the search) that imports them at once
and logs each candidate as soon as its search finishes, so on two cores most of the record is
written while the next candidate is searched.

The steps are those of :mod:`~socialads.models.tracking` and :mod:`~socialads.models.registry`;
this module orders them and brings the helper's log records back to the caller's loggers (the
CLI's display, Prefect's run log), so the edges see one training as before.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import pickle
import re
import signal
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from socialads.errors import RegistryError, SocialAdsError
from socialads.models import registry, tracking
from socialads.models.search import rank
from socialads.progress import step

if TYPE_CHECKING:
    from types import TracebackType

    import pandas as pd

    from socialads.data.processed import Manifest
    from socialads.models.registry import Decision
    from socialads.models.search import CandidateResult
    from socialads.models.tracking import LoggedModel
    from socialads.models.training import TrainingReport
    from socialads.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


class Recorder:
    """Records one training in MLflow: :meth:`begin` with the data's lineage, :meth:`candidate`
    for each finished search, :meth:`finish` for the model, the registry and the gate.

    A context manager: leaving it on an error records the candidates given so far and marks
    the training's parent run FAILED; in any case it stops the helper. ``in_process=True``
    runs each step in the caller's process as it is given (the synchronous form,
    :func:`~socialads.models.training.track_and_register`).
    """

    def __init__(self, settings: Settings, *, in_process: bool = False) -> None:
        self.settings = settings
        self._helper = not in_process
        self._pool: Executor = (
            _Inline()
            if in_process
            else ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_helper,
            )
        )
        self._test: pd.DataFrame | None = None
        self._lineage: Manifest | None = None
        self._begun: Future[_Outcome[tuple[str, str]]] | None = None
        self._run: tuple[str, str] | None = None
        self._given: list[CandidateResult] = []
        self._waiting: list[CandidateResult] = []
        self._logged: list[Future[_Outcome[str]]] = []
        self._closed = False
        # The helper starts, and imports, while the caller goes on.
        self._warm = self._submit(_warm_up) if self._helper else None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            if error is not None and self._begun is not None and not self._closed:
                with suppress(Exception):  # the server may be what failed
                    if self._unstarted():
                        return
                    _, parent = self._started()
                    self._flush()  # the searches that finished keep their runs
                    for logged in self._logged:
                        with suppress(Exception):
                            self._value(logged)
                    self._call(_close, parent, True)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def begin(self, lineage: Manifest, test: pd.DataFrame) -> None:
        """Open the training's parent run with the data's lineage; ``test`` is the holdout the
        candidates' figures are drawn on."""
        self._lineage, self._test = lineage, test
        self._begun = self._submit(_begin, lineage)

    def candidate(self, result: CandidateResult) -> None:
        """Record one finished search as a nested run: now, or as soon as the parent run is
        open (it is not waited for)."""
        self._given.append(result)
        self._waiting.append(result)
        if self._begun is not None and self._begun.done():
            self._flush()

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(settings, *args)`` in the helper (module-level, picklable), after what
        was given before; its log records come back here."""
        return self._call(function, *args)

    def finish(
        self,
        results: list[CandidateResult],
        train: pd.DataFrame,
        gate_lock: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> TrainingReport:
        """Log the best candidate's model, register it and apply the gate under ``gate_lock``;
        close the parent run. Failures of the tracking server are :class:`RegistryError`."""
        from socialads.models.training import TrainingReport, leaderboard_rows

        metric = self.settings.selection_metric
        best = rank(results)[0]
        with step("track", "register", "MLflow runs and model", self.settings.mlflow_uri) as note:
            _, parent = self._started()
            self._flush()
            for logged in self._logged:
                self._value(logged)
            # The model's input example is the training split's first rows: ship only those.
            model = self._call(_log_model, parent, best, train.head(3))
            note.detail = f"run {parent}, {len(results)} candidate runs, {best.name} logged"
        reason = best.onnx.reason if best.onnx is not None else "not converted to ONNX"
        with step("gate", "register", "registry and promotion gate") as note:
            tags = {registry.TAG_ONNX_REASON: reason} if reason else None
            version = self._call(_register, model, parent, tags)
            with gate_lock():
                decision = self._call(_gate, version, parent, best.score(metric), self._test)
            note.detail = decision.headline()
        self._call(_close, parent, False)
        self._closed = True
        return TrainingReport(
            metric=metric,
            leaderboard=leaderboard_rows(results, metric),
            best=best.name,
            decision=decision,
            run_id=parent,
            model_uri=model.uri,
        )

    # -- plumbing ---------------------------------------------------------------------------
    def _started(self) -> tuple[str, str]:
        """(experiment id, parent run id), waiting for the parent run if need be."""
        if self._run is None:
            if self._begun is None or self._lineage is None:
                raise RuntimeError("Recorder.begin was not called")
            if self._unstarted():
                log.warning(
                    "the process that records the training in MLflow could not start; "
                    "recording in this process instead (a script that runs the flows needs "
                    'the `if __name__ == "__main__":` guard)'
                )
                self._pool.shutdown(wait=True)
                self._pool, self._helper, self._warm = _Inline(), False, None
                self._waiting, self._logged = list(self._given), []
                self._begun = self._submit(_begin, self._lineage)
            self._run = self._value(self._begun)
        return self._run

    def _unstarted(self) -> bool:
        """True when the helper process never came up (waits for its start)."""
        return self._warm is not None and isinstance(self._warm.exception(), BrokenProcessPool)

    def _flush(self) -> None:
        experiment_id, parent = self._started()
        for result in self._waiting:
            self._logged.append(
                self._submit(
                    _log_candidate, experiment_id, parent, result, self._test, self._lineage
                )
            )
        self._waiting.clear()

    def _submit(self, function: Callable[..., T], *args: Any) -> Future[_Outcome[T]]:
        return self._pool.submit(_run_job, self._helper, function, self.settings, *args)

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        return self._value(self._submit(function, *args))

    def _value(self, future: Future[_Outcome[T]]) -> T:
        """The job's value, after re-emitting its log records here (once); its error raised."""
        try:
            outcome = future.result()
        except BrokenProcessPool as exc:
            raise RegistryError(
                "the process recording the training in MLflow stopped unexpectedly "
                "(killed, or out of memory?)"
            ) from exc
        for record in outcome.records:
            logging.getLogger(record.name).handle(record)
        outcome.records.clear()
        if outcome.error is not None:
            if outcome.trace is not None:
                raise outcome.error from HelperError(outcome.trace)
            raise outcome.error
        return outcome.value  # type: ignore[return-value]  # set when there is no error


@dataclass
class _Outcome(Generic[T]):
    """What a job sends back: its value or error, and the log records it made."""

    value: T | None = None
    error: BaseException | None = None
    trace: str | None = None
    """The helper's traceback of an unexpected error."""
    records: list[logging.LogRecord] = field(default_factory=list)


class HelperError(Exception):
    """The cause of an error raised in the helper process: its traceback, as text."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}" if self.args else ""


class _Inline(Executor):
    """Runs each call at once in this process (the ``in_process`` recorder)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class _Collect(logging.Handler):
    """Keeps the helper's records, made picklable, for the caller to re-emit."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.INFO)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args, record.exc_info = record.getMessage(), None, None
        self.records.append(record)


def _run_job(
    helper: bool, function: Callable[..., T], settings: Settings, *args: Any
) -> _Outcome[T]:
    """Run ``function(settings, *args)``; failures become the outcome's error (tracking server
    failures a :class:`RegistryError` naming it), in the helper with the records it logged."""
    outcome: _Outcome[T] = _Outcome()
    collect = _Collect(outcome.records) if helper else None
    root = logging.getLogger()
    if collect is not None:
        root.addHandler(collect)
    try:
        outcome.value = function(settings, *args)
    except SocialAdsError as exc:
        outcome.error = exc
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        error = RegistryError(f"MLflow at {settings.mlflow_uri} failed: {detail}{_hint(detail)}")
        if helper:  # tracebacks do not pickle: the caller chains this text to the error
            outcome.trace = traceback.format_exc()
        else:
            error.__cause__ = exc
        outcome.error = error
    finally:
        if collect is not None:
            root.removeHandler(collect)
    if helper and outcome.error is not None:
        try:
            pickle.dumps(outcome.error)
        except Exception:
            outcome.error = RegistryError(str(outcome.error))
    return outcome


def _hint(detail: str) -> str:
    """What to look at when the server itself reported the failure."""
    # A server proxying artifacts answers 5xx when *its* artifact store (S3) fails.
    if "/mlflow-artifacts/" in detail and re.search(r"\b5\d\d error responses", detail):
        return "; the server could not store the artifacts: check its artifact store and its log"
    return ""


# -- in the helper process ------------------------------------------------------------------
def _start_helper() -> None:
    """The helper's process set-up: its console output goes nowhere (its records go back to
    the caller), Ctrl-C is for the caller (which then closes the run), warnings are records."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nothing to clean up at exit: skip the interpreter's teardown of MLflow, scikit-learn
    # and matplotlib (1.3-1.5 s measured here), which the caller's shutdown waits for.
    atexit.register(os._exit, 0)
    sink = open(os.devnull, "w")  # noqa: SIM115  # the helper's stdout and stderr for its life
    sys.stdout = sys.stderr = sink
    logging.captureWarnings(True)
    logging.getLogger("socialads").setLevel(logging.INFO)


def _warm_up(settings: Settings) -> None:
    """Import what recording needs and open the tracking store."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import skops.io  # noqa: F401

    # MLflow's loggers print to stderr themselves: send their records with the others.
    mlflow_logger = logging.getLogger("mlflow")
    for handler in list(mlflow_logger.handlers):
        mlflow_logger.removeHandler(handler)
    mlflow_logger.propagate = True
    tracking.ensure_experiment(tracking.connect(settings), settings)


def _begin(settings: Settings, lineage: Manifest) -> tuple[str, str]:
    client = tracking.connect(settings)
    experiment_id = tracking.ensure_experiment(client, settings)
    return experiment_id, tracking.start_parent_run(client, experiment_id, lineage, settings)


def _log_candidate(
    settings: Settings,
    experiment_id: str,
    parent: str,
    result: CandidateResult,
    test: pd.DataFrame,
    lineage: Manifest,
) -> str:
    client = tracking.connect(settings)
    metric = settings.selection_metric
    return tracking.log_candidate(client, experiment_id, parent, result, test, lineage, metric)


def _log_model(
    settings: Settings, parent: str, best: CandidateResult, example: pd.DataFrame
) -> LoggedModel:
    metric = settings.selection_metric
    summary = {f"best_holdout_{k}": v for k, v in best.holdout.items()}
    summary[f"best_cv_{metric}"] = best.cv_score
    if best.onnx is not None:
        summary |= best.onnx.metrics()
    tracking.log_batch(tracking.connect(settings), parent, {"best_candidate": best.name}, summary)
    return tracking.log_best_model(settings, parent, best, example, metric)


def _register(
    settings: Settings, model: LoggedModel, parent: str, tags: dict[str, str] | None
) -> str:
    return registry.register_tagged(tracking.connect(settings), settings, model, parent, tags)


def _gate(
    settings: Settings, version: str, parent: str, score: float, test: pd.DataFrame
) -> Decision:
    client = tracking.connect(settings)
    return registry.gate_version(client, settings, version, parent, score, test)


def _close(settings: Settings, parent: str, failed: bool) -> None:
    tracking.finish_run(tracking.connect(settings), parent, failed=failed)
