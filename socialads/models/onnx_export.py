"""The ONNX form of a model Pipeline: conversion (skl2onnx), the ORT session, the check.

Every candidate's whole Pipeline (encoding, scaling, estimator) is converted to one ONNX
graph at training time and checked against ``pipeline.predict_proba`` on the holdout plus a
probe grid over the declared bounds (:data:`socialads.data.schema.BOUNDS`). It passes when
P(class 1) differs by at most :data:`TOLERANCE` everywhere and no served class changes.

Served class, here and in serving: ``1 if P(1) > P(0) else 0`` (argmax, ties to class 0),
so the returned class and probability never contradict each other.

Only numpy is imported at module level: the one-off predict path uses :func:`session` and
:func:`probabilities` without scikit-learn, skl2onnx or MLflow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from socialads.data.schema import AGE, BOUNDS, FEATURES, GENDER, GENDERS, SALARY

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    import onnxruntime
    import pandas as pd
    from sklearn.pipeline import Pipeline


ONNX_FILE = "model.onnx"
ONNX_ARTIFACT = f"extra_files/{ONNX_FILE}"
"""Where the ONNX graph sits among a model version's artifacts (MLflow's ``extra_files``)."""
TOLERANCE = 1e-5
"""Largest accepted |ΔP(class 1)| between ONNX Runtime and scikit-learn.

ONNX Runtime computes in float32 (relative precision 6e-8): a faithful conversion of these
families differs by < 1e-6. 1e-5 leaves that rounding an order of magnitude of room, while a
converter that reproduces a different formula (another calibration, other neighbours) is off
by 1e-3 or more; and the service reports probabilities to 6 decimals at most.
"""
PROBABILITIES = "probabilities"
ENGINE_METADATA = "socialads.estimator"
"""ONNX metadata key naming the estimator class the graph was converted from."""


@dataclass(frozen=True)
class OnnxCheck:
    """How the ONNX graph compares with scikit-learn on the check records."""

    records: int
    max_abs_diff: float
    label_flips: int

    @property
    def passed(self) -> bool:
        """Within :data:`TOLERANCE` and no served class changed."""
        return self.max_abs_diff <= TOLERANCE and self.label_flips == 0


@dataclass(frozen=True)
class OnnxExport:
    """A candidate's ONNX graph when it converted and passed the check, else why not."""

    model: bytes | None
    check: OnnxCheck | None
    reason: str | None

    def metrics(self) -> dict[str, float]:
        """The check's figures, for the candidate's run."""
        if self.check is None:
            return {"onnx_ok": 0.0}
        return {
            "onnx_ok": float(self.model is not None),
            "onnx_check_records": float(self.check.records),
            "onnx_max_abs_diff": self.check.max_abs_diff,
            "onnx_label_flips": float(self.check.label_flips),
        }


# -- running a graph (no scikit-learn here) ---------------------------------------------------
def session(model: bytes, threads: int = 1) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads (sequential)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def feeds(
    genders: Sequence[str] | npt.NDArray[Any], ages: Any, salaries: Any
) -> dict[str, npt.NDArray[Any]]:
    """The graph's inputs: one column per feature (Gender text, Age and Salary float64)."""
    return {
        GENDER: np.asarray(genders, dtype=object).reshape(-1, 1),
        AGE: np.asarray(ages, dtype=np.float64).reshape(-1, 1),
        SALARY: np.asarray(salaries, dtype=np.float64).reshape(-1, 1),
    }


def probabilities(
    sess: onnxruntime.InferenceSession, inputs: dict[str, npt.NDArray[Any]]
) -> npt.NDArray[np.float64]:
    """P(class 0), P(class 1) per record, as an (n, 2) float64 array."""
    (proba,) = sess.run([PROBABILITIES], inputs)
    return np.asarray(proba, dtype=np.float64)


def estimator_name(sess: onnxruntime.InferenceSession) -> str | None:
    """The estimator class recorded in a graph converted by :func:`convert`."""
    name = sess.get_modelmeta().custom_metadata_map.get(ENGINE_METADATA)
    return None if name is None else str(name)


# -- conversion and check (training side) -----------------------------------------------------
def convert(pipeline: Pipeline) -> bytes:
    """The whole fitted Pipeline as one serialised ONNX graph (raises what skl2onnx raises)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from skl2onnx.sklapi import CastTransformer
    from sklearn.pipeline import Pipeline

    (pre_name, preprocess), (model_name, estimator) = pipeline.steps[0], pipeline.steps[-1]
    # scikit-learn scales in float64, then its trees compare float32 casts of the scaled
    # values with thresholds that sit on training values. The graph does the same: double
    # inputs and scaling, then a cast to float32 before the estimator (which the
    # estimator's own float32 computations need anyway).
    cast = CastTransformer(dtype=np.float32).fit(np.zeros((1, 1)))
    with warnings.catch_warnings():
        # The SVC converter reads probA_/probB_, deprecated with SVC(probability=True) in
        # scikit-learn 1.9 (see socialads.models.search).
        warnings.filterwarnings("ignore", message=".*probability=True", category=FutureWarning)
        graph = convert_sklearn(
            Pipeline([(pre_name, preprocess), ("cast", cast), (model_name, estimator)]),
            initial_types=[
                (GENDER, StringTensorType([None, 1])),
                (AGE, DoubleTensorType([None, 1])),
                (SALARY, DoubleTensorType([None, 1])),
            ],
            # Plain (n, 2) probabilities instead of a list of {class: p} maps.
            options={id(estimator): {"zipmap": False}},
        )
    entry = graph.metadata_props.add()
    entry.key, entry.value = ENGINE_METADATA, type(estimator).__name__
    return bytes(graph.SerializeToString())


def probe_grid(seed: int = 20240611, random_records: int = 2000) -> pd.DataFrame:
    """Check records spanning the declared bounds, for both genders.

    Every whole year × every 1,000 of salary up to 200,000 then every 10,000 up to the
    maximum (the training data are whole years and thousands, where ties and thresholds
    live), plus ``random_records`` uniform records within the bounds.
    """
    import pandas as pd

    age, salary = BOUNDS[AGE], BOUNDS[SALARY]
    years = np.arange(age.minimum, age.maximum + 1)
    fine_top = min(200_000.0, salary.maximum)
    salaries = np.unique(
        np.concatenate(
            [
                np.arange(salary.minimum, fine_top + 1, 1000.0),
                np.arange(fine_top, salary.maximum + 1, 10_000.0),
                [salary.maximum],
            ]
        )
    )
    g, a, s = np.meshgrid(np.arange(len(GENDERS)), years, salaries, indexing="ij")
    rng = np.random.default_rng(seed)
    gender_codes = np.concatenate([g.ravel(), rng.integers(0, len(GENDERS), random_records)])
    return pd.DataFrame(
        {
            GENDER: np.asarray(GENDERS, dtype=object)[gender_codes],
            AGE: np.concatenate([a.ravel(), rng.uniform(age.minimum, age.maximum, random_records)]),
            SALARY: np.concatenate(
                [s.ravel(), rng.uniform(salary.minimum, salary.maximum, random_records)]
            ),
        },
        columns=list(FEATURES),
    )


def served_classes(proba: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The served class of each row of (P(0), P(1)): 1 only when P(1) > P(0)."""
    return (proba[:, 1] > proba[:, 0]).astype(np.int64)


CHECK_BATCH = 4096
"""Records per ONNX Runtime call of the check: a KNN graph materialises a records × training
rows distance matrix, so one call over a large holdout would take gigabytes."""


def check(pipeline: Pipeline, model: bytes, records: pd.DataFrame) -> OnnxCheck:
    """Compare the graph with ``pipeline.predict_proba`` on ``records`` (validated rows)."""
    expected = np.asarray(pipeline.predict_proba(records[list(FEATURES)]), dtype=np.float64)
    graph = session(model)
    batches = [
        probabilities(graph, feeds(part[GENDER].to_numpy(), part[AGE], part[SALARY]))
        for part in (
            records.iloc[start : start + CHECK_BATCH]
            for start in range(0, len(records), CHECK_BATCH)
        )
    ]
    got = np.concatenate(batches) if batches else np.empty((0, 2))
    return OnnxCheck(
        records=len(records),
        max_abs_diff=float(np.max(np.abs(got[:, 1] - expected[:, 1]))),
        label_flips=int(np.sum(served_classes(got) != served_classes(expected))),
    )


def export(pipeline: Pipeline, holdout: pd.DataFrame) -> OnnxExport:
    """Convert ``pipeline`` and check it on ``holdout`` plus :func:`probe_grid`; never raises.

    A failed conversion or check gives an export without a model and the reason; the
    candidate is then served by its scikit-learn Pipeline.
    """
    import pandas as pd

    try:
        model = convert(pipeline)
    except Exception as exc:  # whatever skl2onnx raises for an unsupported model
        return OnnxExport(None, None, f"ONNX conversion failed: {type(exc).__name__}: {exc}")
    records = pd.concat([holdout[list(FEATURES)], probe_grid()], ignore_index=True)
    try:
        result = check(pipeline, model, records)
    except Exception as exc:  # ONNX Runtime refused the graph
        return OnnxExport(None, None, f"ONNX check failed: {type(exc).__name__}: {exc}")
    if not result.passed:
        reason = (
            f"ONNX disagrees with scikit-learn on {result.records} check records: "
            f"max |Δp| {result.max_abs_diff:.2g} (tolerance {TOLERANCE:g}), "
            f"{result.label_flips} label flips"
        )
        return OnnxExport(None, result, reason)
    return OnnxExport(model, result, None)
