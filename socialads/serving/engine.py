"""What computes the predictions of the served model: ONNX Runtime, or the Pipeline.

:class:`OnnxEngine` runs the version's checked ONNX graph in an ONNX Runtime session (a few
µs per record). :class:`SklearnEngine` calls the scikit-learn Pipeline: the fallback for a
version without an ONNX graph (its family did not convert or disagreed with scikit-learn at
training time, or it was trained before the conversion existed). Both give the served class
``1 if P(1) > P(0) else 0`` and P(class 1); the fallback's reason is kept in ``reason``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from socialads.data.schema import AGE, FEATURES, GENDER, GENDERS, SALARY
from socialads.models import onnx_export

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Sequence

    import numpy.typing as npt
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

ONNX = "onnxruntime"
SKLEARN = "sklearn"


class Engine(Protocol):
    """Predicts with one model version."""

    @property
    def name(self) -> str:
        """``onnxruntime`` or ``sklearn``."""

    @property
    def reason(self) -> str | None:
        """Why the scikit-learn fallback serves (None for ONNX Runtime)."""

    @property
    def estimator(self) -> str:
        """The estimator's class name, e.g. ``LogisticRegression``."""

    def predict_one(self, gender: str, age: float, salary: float) -> tuple[int, float]:
        """``(class, P(class 1))`` of one validated record."""
        ...

    def predict_many(
        self, genders: Sequence[str], ages: Sequence[float], salaries: Sequence[float]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """``(classes, P(class 1))`` of validated records."""
        ...


class OnnxEngine:
    """An ONNX graph in an ONNX Runtime session."""

    name = ONNX
    reason = None

    def __init__(self, model: bytes, threads: int = 1) -> None:
        self.session = onnx_export.session(model, threads)
        self.estimator = onnx_export.estimator_name(self.session) or "unknown"
        # The one-record feeds reuse two ready Gender arrays (a few µs per request).
        self._gender = {g: np.array([[g]], dtype=object) for g in GENDERS}

    def predict_one(self, gender: str, age: float, salary: float) -> tuple[int, float]:
        """``(class, P(class 1))`` of one record."""
        inputs = {
            GENDER: self._gender[gender],
            AGE: np.array([[age]], dtype=np.float64),
            SALARY: np.array([[salary]], dtype=np.float64),
        }
        (proba,) = self.session.run([onnx_export.PROBABILITIES], inputs)
        p0, p1 = float(proba[0, 0]), float(proba[0, 1])
        return (1 if p1 > p0 else 0), p1

    def predict_many(
        self, genders: Sequence[str], ages: Sequence[float], salaries: Sequence[float]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """``(classes, P(class 1))`` of many records in one session call."""
        if len(genders) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        proba = onnx_export.probabilities(self.session, onnx_export.feeds(genders, ages, salaries))
        return onnx_export.served_classes(proba), proba[:, 1]


class SklearnEngine:
    """The scikit-learn Pipeline on a DataFrame: correct, about a millisecond per call."""

    name = SKLEARN

    def __init__(self, pipeline: Pipeline, reason: str) -> None:
        self.pipeline = pipeline
        self.reason = reason
        self.estimator = type(pipeline.steps[-1][1]).__name__
        classes = [int(c) for c in pipeline.classes_]
        self._columns = [classes.index(0), classes.index(1)]

    def predict_one(self, gender: str, age: float, salary: float) -> tuple[int, float]:
        """``(class, P(class 1))`` of one record."""
        classes, p1 = self.predict_many([gender], [age], [salary])
        return int(classes[0]), float(p1[0])

    def predict_many(
        self, genders: Sequence[str], ages: Sequence[float], salaries: Sequence[float]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """``(classes, P(class 1))`` of many records in one ``predict_proba`` call."""
        import pandas as pd

        if len(genders) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        frame = pd.DataFrame(
            {GENDER: list(genders), AGE: ages, SALARY: salaries}, columns=list(FEATURES)
        )
        proba = np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)
        proba = proba[:, self._columns]
        return onnx_export.served_classes(proba), proba[:, 1]


class MicroBatcher:
    """Runs the one-record predictions awaited in one event-loop turn as one engine call.

    An ONNX Runtime call costs about the same for one record as for a few dozen; under
    concurrent load, requests whose handlers reach the prediction in the same turn of the
    event loop share one :meth:`Engine.predict_many`. Nothing waits on a timer: the flush is
    the next callback of the loop, so a lone request is answered as soon as without it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: list[tuple[str, float, float, asyncio.Future[tuple[int, float]]]] = []

    async def predict(self, gender: str, age: float, salary: float) -> tuple[int, float]:
        """``(class, P(class 1))`` of one record, computed with the others of this turn."""
        import asyncio  # here: the one-off predict path imports this module, not asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, float]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((gender, age, salary, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            if len(pending) == 1:
                gender, age, salary, _ = pending[0]
                results = [self.engine.predict_one(gender, age, salary)]
            else:
                genders, ages, salaries, _ = zip(*pending, strict=True)
                classes, p1 = self.engine.predict_many(genders, ages, salaries)
                results = list(zip(classes.tolist(), p1.tolist(), strict=True))
        except Exception as exc:
            for *_, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(pending, results, strict=True):
            if not future.done():  # a cancelled request (client gone) is skipped
                future.set_result(result)


def build_engine(
    onnx_model: bytes | None,
    load_pipeline: Callable[[], Pipeline],
    reason: str | None,
    threads: int = 1,
) -> Engine:
    """ONNX Runtime on ``onnx_model`` when there is one and ORT accepts it, else the Pipeline.

    ``load_pipeline()`` returns the scikit-learn Pipeline; it is called only for the
    fallback. ``reason`` says why there is no ONNX graph (logged once, shown in /model).
    """
    if onnx_model is not None:
        try:
            return OnnxEngine(onnx_model, threads)
        except Exception as exc:  # e.g. a graph newer than this ONNX Runtime
            reason = f"ONNX Runtime refused the graph: {type(exc).__name__}: {exc}"
    reason = reason or "no ONNX graph in this model version"
    log.warning("serving with the scikit-learn Pipeline: %s", reason)
    return SklearnEngine(load_pipeline(), reason)
