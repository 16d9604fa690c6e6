"""Compile a fitted model Pipeline into a plain Python/numpy predictor for serving.

``compile_pipeline(pipeline)`` reads the fitted parameters of the Pipeline built by
:func:`socialads.features.preprocessing.build_pipeline` (Gender ordinal code, standardised
Age and EstimatedSalary, then one estimator) and returns a :class:`FastPredictor` that
gives the same probabilities as ``pipeline.predict_proba`` (to 1e-9, most families
bit for bit) at a few microseconds per record instead of about a millisecond.

Families and how they are compiled:

* ``logistic_regression``, ``gaussian_nb``: plain float math with precomputed
  coefficients (the Gender term is folded into a per-Gender constant).
* ``knn``: numpy distances to the training points, computed in the same order as
  sklearn's KD/Ball tree so that they are bit-identical; a record whose k-th and
  (k+1)-th nearest distances tie (within a tiny tolerance) and whose tied points have
  different labels asks the fitted KD/Ball tree for its neighbours, since which of the
  tied points sklearn keeps depends on the tree's traversal (about 1% of records in the
  usual customer range: the data set has duplicate rows). Ties among points of one
  label cannot change the answer and are resolved locally.
  ``algorithm="brute"`` is not compiled: there sklearn's choice among tied neighbours
  depends on the other rows of the same ``predict_proba`` batch.
* ``svm_rbf``: numpy RBF kernel over the support vectors, then libsvm's probability
  estimate *exactly as sklearn's bundled libsvm computes it*: the Platt sigmoid gives the
  pairwise probability, clipped to [1e-7, 1 - 1e-7], and is then passed through libsvm's
  iterative ``multiclass_probability`` solver even for two classes. That solver stops
  at a tolerance of 0.0025, so its answer differs from the plain sigmoid by up to a few
  1e-3, and is exactly 0.5 / 0.5 when the sigmoid is within 0.005 of 0.5.
* ``random_forest``, ``gradient_boosting``: the trees compare float32 features with
  thresholds, so the ensemble is constant on the cells of the grid spanned by all
  split thresholds. The probabilities of every cell are tabulated at compile time by
  the fitted estimator itself; a prediction is two ``bisect`` calls and a list lookup
  (mode ``"grid"``). When the grid would exceed ``max_grid_cells`` the trees are walked
  in plain Python instead (mode ``"walk"``).

Anything else (another estimator, another pipeline shape, an unexpected parameter)
gets :class:`GenericPredictor`, which calls ``pipeline.predict_proba`` on a pandas
DataFrame: correct but slow. ``compile_pipeline`` never raises for a fitted Pipeline;
by default it also checks the compiled predictor against the Pipeline on a few hundred
probe records and falls back to the generic predictor on any disagreement.

Prediction contract of the service: the predicted class is the argmax of
``predict_proba`` with ties going to class 0, i.e. ``1 if P(1) > P(0) else 0``, where
both probabilities are computed the way sklearn computes them for that family (so an
exact 0.5 / 0.5 tie, common for forests and for SVC, gives class 0). This is what
``RandomForestClassifier.predict`` does, and what the other families' ``predict`` does
up to float rounding, except SVC: sklearn's ``SVC.predict`` uses the sign of the
decision function, which can disagree with its own Platt probabilities near the
boundary. The service deliberately follows the probabilities, so that the returned
class and the returned probability never contradict each other.

Inputs: ``gender`` must be a canonical Gender (see
:func:`socialads.data.schema.normalise_gender`); ages and salaries must be finite
numbers (the API validates their bounds). A non-canonical Gender or a non-finite number
raises ``ValueError``.
"""

from __future__ import annotations

import bisect
import logging
import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from socialads.data.schema import AGE, BOUNDS, FEATURES, GENDER, GENDERS, SALARY

if TYPE_CHECKING:
    import numpy.typing as npt
    from sklearn.pipeline import Pipeline

    FloatArray: TypeAlias = npt.NDArray[np.float64]
    IntArray: TypeAlias = npt.NDArray[np.int64]
    Genders: TypeAlias = Sequence[str] | npt.NDArray[Any]
    Numbers: TypeAlias = Sequence[float] | npt.NDArray[Any]

__all__ = [
    "DEFAULT_MAX_GRID_CELLS",
    "FastPredictor",
    "GenericPredictor",
    "compile_pipeline",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_GRID_CELLS = 1_000_000
"""Largest threshold grid tabulated for tree ensembles (two float lists of this size)."""

_CHUNK = 2048
"""Rows per block in the vectorised KNN/SVC paths (bounds the distance-matrix memory)."""

_LIBSVM_MIN_PROB = 1e-7
_FLOAT32_PAIR = struct.Struct("ff")


class _UnsupportedError(Exception):
    """The pipeline is outside what a specialised predictor reproduces exactly."""


# --------------------------------------------------------------------------- base


class FastPredictor(ABC):
    """A compiled Pipeline: P(class 1) and the predicted class for one or many records."""

    family: str
    """Model family (``logistic_regression``, ``knn``, ..., or ``generic``)."""

    @abstractmethod
    def predict_pair_one(self, gender: str, age: float, salary: float) -> tuple[float, float]:
        """``(P(class 0), P(class 1))`` of one record, as sklearn computes them."""

    @abstractmethod
    def predict_pair_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[FloatArray, FloatArray]:
        """``(P(class 0), P(class 1))`` arrays of many records."""

    def predict_proba_one(self, gender: str, age: float, salary: float) -> float:
        """Probability of class 1 for one record."""
        return self.predict_pair_one(gender, age, salary)[1]

    def predict_proba_many(self, genders: Genders, ages: Numbers, salaries: Numbers) -> FloatArray:
        """Probabilities of class 1 for many records (one float64 array)."""
        return self.predict_pair_many(genders, ages, salaries)[1]

    def predict_one(self, gender: str, age: float, salary: float) -> tuple[int, float]:
        """``(class, P(class 1))``: class is the argmax of the probabilities, ties → 0."""
        p0, p1 = self.predict_pair_one(gender, age, salary)
        return (1 if p1 > p0 else 0), p1

    def predict_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[IntArray, FloatArray]:
        """``(classes, P(class 1))`` arrays, same rule as :meth:`predict_one`."""
        p0, p1 = self.predict_pair_many(genders, ages, salaries)
        return (p1 > p0).astype(np.int64), p1

    def __repr__(self) -> str:
        return f"<{type(self).__name__} family={self.family!r}>"


def _unknown_gender(gender: object) -> ValueError:
    return ValueError(f"Gender must be one of {', '.join(GENDERS)}, got {gender!r}")


def _not_finite(age: object, salary: object) -> ValueError:
    return ValueError(f"Age and EstimatedSalary must be finite numbers, got {age!r}, {salary!r}")


def _as_columns(
    genders: Genders, ages: Numbers, salaries: Numbers
) -> tuple[list[str], FloatArray, FloatArray]:
    """Validated many-record input: Gender list and finite float64 Age/Salary arrays."""
    gender_list = list(genders)
    age_arr = np.asarray(ages, dtype=np.float64).reshape(-1)
    salary_arr = np.asarray(salaries, dtype=np.float64).reshape(-1)
    if not len(gender_list) == age_arr.shape[0] == salary_arr.shape[0]:
        raise ValueError(
            "genders, ages and salaries must have the same length, got "
            f"{len(gender_list)}, {age_arr.shape[0]}, {salary_arr.shape[0]}"
        )
    if not (np.isfinite(age_arr).all() and np.isfinite(salary_arr).all()):
        raise ValueError("Age and EstimatedSalary must be finite numbers")
    return gender_list, age_arr, salary_arr


# ------------------------------------------------------------------ generic fallback


class GenericPredictor(FastPredictor):
    """Correct-but-slow fallback: ``pipeline.predict_proba`` on a pandas DataFrame."""

    family = "generic"

    def __init__(self, pipeline: Pipeline, reason: str = "") -> None:
        self.pipeline = pipeline
        self.reason = reason
        self.classes = np.asarray(pipeline.classes_)
        where = {int(c): i for i, c in enumerate(self.classes.tolist()) if c in (0, 1)}
        self._i0 = where.get(0)
        self._i1 = where.get(1)

    def _proba(self, genders: list[str], ages: FloatArray, salaries: FloatArray) -> FloatArray:
        import pandas as pd

        for gender in genders:
            if not (isinstance(gender, str) and gender in GENDERS):
                raise _unknown_gender(gender)
        frame = pd.DataFrame({GENDER: genders, AGE: ages, SALARY: salaries}, columns=FEATURES)
        return np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)

    def _column(self, proba: FloatArray, index: int | None) -> FloatArray:
        return proba[:, index] if index is not None else np.zeros(proba.shape[0])

    def predict_pair_one(self, gender: str, age: float, salary: float) -> tuple[float, float]:
        """``(P(class 0), P(class 1))`` of one record via the Pipeline."""
        p0, p1 = self.predict_pair_many([gender], [age], [salary])
        return float(p0[0]), float(p1[0])

    def predict_pair_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[FloatArray, FloatArray]:
        """``(P(class 0), P(class 1))`` arrays via the Pipeline."""
        gender_list, age_arr, salary_arr = _as_columns(genders, ages, salaries)
        if not gender_list:
            return np.zeros(0), np.zeros(0)
        proba = self._proba(gender_list, age_arr, salary_arr)
        return self._column(proba, self._i0), self._column(proba, self._i1)

    def predict_one(self, gender: str, age: float, salary: float) -> tuple[int, float]:
        """``(class, P(class 1))`` with class = ``classes_[argmax(predict_proba)]``."""
        classes, p1 = self.predict_many([gender], [age], [salary])
        return int(classes[0]), float(p1[0])

    def predict_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[IntArray, FloatArray]:
        """``(classes, P(class 1))``; np.argmax keeps the first class on ties."""
        gender_list, age_arr, salary_arr = _as_columns(genders, ages, salaries)
        if not gender_list:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        proba = self._proba(gender_list, age_arr, salary_arr)
        classes = self.classes[np.argmax(proba, axis=1)].astype(np.int64)
        return classes, self._column(proba, self._i1)


# ------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class _Scaling:
    """The fitted ColumnTransformer: Gender code, then standardised Age and Salary."""

    codes: dict[str, float]
    age_mean: float
    age_scale: float
    salary_mean: float
    salary_scale: float

    @property
    def genders(self) -> tuple[str, ...]:
        """The canonical Genders, in the order of :meth:`many`'s Gender indices."""
        return tuple(self.codes)

    def many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[npt.NDArray[np.intp], FloatArray, FloatArray, FloatArray]:
        """Gender index into :attr:`genders`, Gender code, scaled Age, scaled Salary.

        The three feature columns are bit-identical to the ColumnTransformer's output.
        """
        gender_list, age_arr, salary_arr = _as_columns(genders, ages, salaries)
        index = {g: i for i, g in enumerate(self.codes)}
        try:
            gidx = np.fromiter((index[g] for g in gender_list), np.intp, len(gender_list))
        except (KeyError, TypeError):
            bad = next(g for g in gender_list if not isinstance(g, str) or g not in index)
            raise _unknown_gender(bad) from None
        code_table = np.array(list(self.codes.values()), dtype=np.float64)
        return (
            gidx,
            code_table[gidx],
            (age_arr - self.age_mean) / self.age_scale,
            (salary_arr - self.salary_mean) / self.salary_scale,
        )


def _columns(cols: Any) -> list[Any]:
    if isinstance(cols, str):
        return [cols]
    if callable(cols):
        raise _UnsupportedError("callable column selector")
    return list(np.asarray(cols, dtype=object).reshape(-1))


def _extract(pipeline: Any) -> tuple[_Scaling, Any]:
    """The preprocessing constants and the fitted estimator, or raise _UnsupportedError."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    if type(pipeline) is not Pipeline or len(pipeline.steps) != 2:
        raise _UnsupportedError("not a two-step Pipeline")
    pre, model = pipeline.steps[0][1], pipeline.steps[1][1]
    if type(pre) is not ColumnTransformer or getattr(pre, "sparse_output_", False):
        raise _UnsupportedError("first step is not a dense ColumnTransformer")
    used = [
        (trans, _columns(cols))
        for _, trans, cols in pre.transformers_
        if not (isinstance(trans, str) and trans == "drop") and _columns(cols)
    ]
    if len(used) != 2:
        raise _UnsupportedError("ColumnTransformer does not have exactly two transformers")
    (enc, enc_cols), (scaler, scaler_cols) = used
    if type(enc) is not OrdinalEncoder or enc_cols != [GENDER]:
        raise _UnsupportedError("Gender is not ordinal-encoded first")
    if type(scaler) is not StandardScaler or scaler_cols != [AGE, SALARY]:
        raise _UnsupportedError("Age and EstimatedSalary are not standard-scaled second")
    if np.dtype(enc.dtype) != np.float64 or getattr(enc, "_infrequent_enabled", False):
        raise _UnsupportedError("unexpected OrdinalEncoder options")
    categories = list(enc.categories_[0])
    if len(enc.categories_) != 1 or not set(GENDERS) <= set(categories):
        raise _UnsupportedError("unexpected Gender categories")
    codes = {str(c): float(i) for i, c in enumerate(categories) if c in GENDERS}
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros(2)
    scale = np.ones(2) if not scaler.with_std or scaler.scale_ is None else scaler.scale_
    scale = np.asarray(scale, dtype=np.float64)
    if mean.shape != (2,) or scale.shape != (2,):
        raise _UnsupportedError("unexpected StandardScaler state")
    if hasattr(model, "feature_names_in_"):
        raise _UnsupportedError("estimator was fitted on named (pandas) features")
    classes = getattr(model, "classes_", None)
    if classes is None or np.asarray(classes).tolist() != [0, 1]:
        raise _UnsupportedError("classes are not exactly [0, 1]")
    scaling = _Scaling(codes, float(mean[0]), float(scale[0]), float(mean[1]), float(scale[1]))
    return scaling, model


class _Compiled(FastPredictor):
    """Shared state of the specialised predictors: the preprocessing constants."""

    def __init__(self, scaling: _Scaling) -> None:
        self._scaling = scaling
        self._am = scaling.age_mean
        self._as = scaling.age_scale
        self._sm = scaling.salary_mean
        self._ss = scaling.salary_scale

    def _scaled(self, age: float, salary: float) -> tuple[float, float]:
        """Scaled Age and Salary, computed exactly as StandardScaler does."""
        a = (age - self._am) / self._as
        s = (salary - self._sm) / self._ss
        if not math.isfinite(a + s):
            raise _not_finite(age, salary)
        return a, s

    def _per_gender(self, values: dict[str, Any]) -> npt.NDArray[Any]:
        """Stack per-Gender constants in the order of :meth:`_Scaling.many`'s indices."""
        return np.array([values[g] for g in self._scaling.genders])


# ----------------------------------------------------------------- linear and bayes


def _expit(x: float) -> float:
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


class _LogisticPredictor(_Compiled):
    """LogisticRegression: P(1) = expit(coef·x + intercept), P(0) = 1 - P(1)."""

    family = "logistic_regression"

    def __init__(self, scaling: _Scaling, model: Any) -> None:
        super().__init__(scaling)
        coef = np.asarray(model.coef_, dtype=np.float64)
        if coef.shape != (1, 3):
            raise _UnsupportedError("unexpected coef_ shape")
        c_gender, self._ca, self._cs = (float(c) for c in coef[0])
        self._b = float(np.asarray(model.intercept_, dtype=np.float64).reshape(-1)[0])
        self._base = {g: c_gender * code for g, code in scaling.codes.items()}
        self._base_arr = self._per_gender(self._base).astype(np.float64)

    def predict_pair_one(self, gender: str, age: float, salary: float) -> tuple[float, float]:
        """``(1 - expit(z), expit(z))`` with z the linear decision value."""
        try:
            base = self._base[gender]
        except (KeyError, TypeError):
            raise _unknown_gender(gender) from None
        a, s = self._scaled(age, salary)
        p1 = _expit(base + self._ca * a + self._cs * s + self._b)
        return 1.0 - p1, p1

    def predict_pair_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[FloatArray, FloatArray]:
        """Vectorised :meth:`predict_pair_one`."""
        gidx, _, a, s = self._scaling.many(genders, ages, salaries)
        z = self._base_arr[gidx] + self._ca * a + self._cs * s + self._b
        with np.errstate(over="ignore"):
            p1 = 1.0 / (1.0 + np.exp(-z))
        return 1.0 - p1, p1


class _GaussianNBPredictor(_Compiled):
    """GaussianNB: per-class joint log-likelihood, normalised by sklearn's logsumexp."""

    family = "gaussian_nb"

    def __init__(self, scaling: _Scaling, model: Any) -> None:
        super().__init__(scaling)
        theta = np.asarray(model.theta_, dtype=np.float64)
        var = np.asarray(model.var_, dtype=np.float64)
        if theta.shape != (2, 3) or var.shape != (2, 3):
            raise _UnsupportedError("unexpected GaussianNB parameter shapes")
        log_prior = np.log(np.asarray(model.class_prior_, dtype=np.float64))
        norm = np.array([-0.5 * np.sum(np.log(2.0 * np.pi * var[c, :])) for c in range(2)])
        self._lp0, self._lp1 = float(log_prior[0]), float(log_prior[1])
        self._n0, self._n1 = float(norm[0]), float(norm[1])
        (_, self._ma0, self._ms0), (_, self._ma1, self._ms1) = theta.tolist()
        (_, self._va0, self._vs0), (_, self._va1, self._vs1) = var.tolist()
        self._gender_terms = {
            g: tuple(float((code - theta[c, 0]) ** 2 / var[c, 0]) for c in range(2))
            for g, code in scaling.codes.items()
        }
        self._gender_arr = self._per_gender(self._gender_terms).astype(np.float64)

    def predict_pair_one(self, gender: str, age: float, salary: float) -> tuple[float, float]:
        """Exp of the normalised joint log-likelihoods of classes 0 and 1."""
        try:
            t0, t1 = self._gender_terms[gender]
        except (KeyError, TypeError):
            raise _unknown_gender(gender) from None
        a, s = self._scaled(age, salary)
        da0, ds0, da1, ds1 = a - self._ma0, s - self._ms0, a - self._ma1, s - self._ms1
        j0 = self._lp0 + (self._n0 - 0.5 * (t0 + da0 * da0 / self._va0 + ds0 * ds0 / self._vs0))
        j1 = self._lp1 + (self._n1 - 0.5 * (t1 + da1 * da1 / self._va1 + ds1 * ds1 / self._vs1))
        # sklearn's _logsumexp: log1p(sum of exp(others - max) / n_max) + log(n_max) + max.
        if j0 == j1:
            lse = math.log(2.0) + j0
        else:
            high, low = (j0, j1) if j0 > j1 else (j1, j0)
            lse = math.log1p(math.exp(low - high)) + high
        return math.exp(j0 - lse), math.exp(j1 - lse)

    def predict_pair_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[FloatArray, FloatArray]:
        """Vectorised :meth:`predict_pair_one`."""
        gidx, _, a, s = self._scaling.many(genders, ages, salaries)
        terms = self._gender_arr[gidx]
        da0, ds0, da1, ds1 = a - self._ma0, s - self._ms0, a - self._ma1, s - self._ms1
        j0 = self._lp0 + (
            self._n0 - 0.5 * (terms[:, 0] + da0 * da0 / self._va0 + ds0 * ds0 / self._vs0)
        )
        j1 = self._lp1 + (
            self._n1 - 0.5 * (terms[:, 1] + da1 * da1 / self._va1 + ds1 * ds1 / self._vs1)
        )
        high = np.maximum(j0, j1)
        low = np.minimum(j0, j1)
        lse = np.where(j0 == j1, math.log(2.0) + high, np.log1p(np.exp(low - high)) + high)
        return np.exp(j0 - lse), np.exp(j1 - lse)


# ------------------------------------------------------------------------------ knn


def _distance_vote_one(dists: list[float], ones: list[bool]) -> tuple[float, float]:
    """sklearn's inverse-distance vote over the k nearest (summed nearest first).

    Neighbours at distance zero get weight 1 and all others 0, as in sklearn.
    """
    pairs = sorted(zip(dists, ones, strict=True))
    exact = pairs[0][0] == 0.0
    s0 = s1 = 0.0
    for dist, is_one in pairs:
        weight = float(dist == 0.0) if exact else 1.0 / math.sqrt(dist)
        if is_one:
            s1 += weight
        else:
            s0 += weight
    norm = s0 + s1
    return s0 / norm, s1 / norm


class _KNNPredictor(_Compiled):
    """KNeighborsClassifier (euclidean, uniform or distance weights).

    Squared distances are summed in the order of sklearn's tree metric
    ((Gender² + Age²) + Salary²), so they are bit-identical to what its KD/Ball tree
    computes. When the k-th and (k+1)-th smallest distances tie and the tied points
    disagree on the label, the neighbours come from the fitted tree's own ``query``
    (which tied point it keeps is decided by its traversal order).
    """

    family = "knn"

    def __init__(self, scaling: _Scaling, model: Any) -> None:
        super().__init__(scaling)
        if model.weights not in ("uniform", "distance"):
            raise _UnsupportedError(f"weights={model.weights!r}")
        if model.effective_metric_ != "euclidean" or getattr(model, "outputs_2d_", False):
            raise _UnsupportedError(f"metric {model.effective_metric_!r}")
        if model._fit_method not in ("kd_tree", "ball_tree"):
            # Brute force computes |x|² - 2x·y + |y|² with BLAS, and among exactly tied
            # neighbours which it keeps depends on the other rows of the batch.
            raise _UnsupportedError(f"algorithm {model._fit_method!r}")
        self._tol = 1e-12  # distances are bit-identical; this only guards the order
        fit_x = np.asarray(model._fit_X, dtype=np.float64)
        labels = np.asarray(model._y).reshape(-1)
        if fit_x.ndim != 2 or fit_x.shape[1] != 3 or labels.shape[0] != fit_x.shape[0]:
            raise _UnsupportedError("unexpected KNN training data")
        self._tree = model._tree
        self._k = int(model.n_neighbors)
        self._n = fit_x.shape[0]
        if not 0 < self._k <= self._n:
            raise _UnsupportedError("n_neighbors outside [1, n_samples_fit]")
        self._kk = (self._k - 1, self._k)
        self._distance = model.weights == "distance"
        self._xa = np.ascontiguousarray(fit_x[:, 1])
        self._xs = np.ascontiguousarray(fit_x[:, 2])
        self._y1 = labels == 1
        self._codes = dict(scaling.codes)
        self._dg = {g: (fit_x[:, 0] - code) ** 2 for g, code in scaling.codes.items()}
        self._dg_arr = self._per_gender(self._dg).astype(np.float64)

    def _tree_neighbours(self, x: FloatArray) -> npt.NDArray[np.intp]:
        """The k neighbours sklearn's own KD/Ball tree picks (as ``kneighbors`` does)."""
        return np.asarray(self._tree.query(x, k=self._k, return_distance=False))

    def _vote(self, d: FloatArray, idx: npt.NDArray[np.intp]) -> tuple[float, float]:
        """Probabilities from the chosen neighbours ``idx`` with squared distances ``d``."""
        ones = self._y1[idx]
        if not self._distance:
            n1 = int(np.count_nonzero(ones))
            return (self._k - n1) / self._k, n1 / self._k
        return _distance_vote_one(d[idx].tolist(), ones.tolist())

    def _tied(self, d: FloatArray, kth: float, nxt: float) -> tuple[float, float] | None:
        """The vote when the points tied at the k-th distance share one label, else None.

        Which tied points sklearn keeps cannot change the answer then (tied distances
        are equal, so are their weights); otherwise the fitted tree has to decide.
        """
        labels = self._y1[np.abs(d - kth) <= self._tol * nxt]
        if labels.all() or not labels.any():
            return self._vote(d, np.argsort(d, kind="stable")[: self._k])
        return None

    def predict_pair_one(self, gender: str, age: float, salary: float) -> tuple[float, float]:
        """Vote (uniform) or inverse-distance vote of the k nearest training points."""
        try:
            dg = self._dg[gender]
        except (KeyError, TypeError):
            raise _unknown_gender(gender) from None
        a, s = self._scaled(age, salary)
        d = self._xa - a
        d *= d
        d += dg
        t = self._xs - s
        t *= t
        d += t
        k = self._k
        if self._n <= k:
            return self._vote(d, np.arange(self._n))
        part = np.partition(d, self._kk)
        kth, nxt = float(part[k - 1]), float(part[k])
        if nxt - kth <= self._tol * nxt:
            resolved = self._tied(d, kth, nxt)
            if resolved is not None:
                return resolved
            return self._vote(d, self._tree_neighbours(np.array([[self._codes[gender], a, s]]))[0])
        if not self._distance:
            n1 = int(np.count_nonzero((d <= kth) & self._y1))
            return (k - n1) / k, n1 / k
        return self._vote(d, np.flatnonzero(d <= kth))

    def predict_pair_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[FloatArray, FloatArray]:
        """Vectorised :meth:`predict_pair_one`, in blocks of rows."""
        gidx, g, a, s = self._scaling.many(genders, ages, salaries)
        p0 = np.empty(g.shape[0])
        p1 = np.empty(g.shape[0])
        for start in range(0, g.shape[0], _CHUNK):
            block = slice(start, start + _CHUNK)
            p0[block], p1[block] = self._block(gidx[block], g[block], a[block], s[block])
        return p0, p1

    def _block(
        self, gidx: npt.NDArray[np.intp], g: FloatArray, a: FloatArray, s: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        d = self._xa - a[:, None]
        d *= d
        d += self._dg_arr[gidx]
        t = self._xs - s[:, None]
        t *= t
        d += t
        k, rows = self._k, d.shape[0]
        tie = np.zeros(rows, dtype=bool)
        if self._n > k:
            part = np.partition(d, self._kk, axis=1)
            kth, nxt = part[:, k - 1], part[:, k]
            tie = nxt - kth <= self._tol * nxt
        if self._distance:
            p0, p1 = self._distance_vote(d)
        else:
            mask = d <= kth[:, None] if self._n > k else np.ones_like(d, dtype=bool)
            n1 = np.count_nonzero(mask & self._y1, axis=1)
            p0, p1 = (k - n1) / k, n1 / k
        unresolved = []
        for i in np.flatnonzero(tie).tolist():
            resolved = self._tied(d[i], float(kth[i]), float(nxt[i]))
            if resolved is None:
                unresolved.append(i)
            else:
                p0[i], p1[i] = resolved
        if unresolved:
            x = np.column_stack([g[unresolved], a[unresolved], s[unresolved]])
            for i, neighbours in zip(unresolved, self._tree_neighbours(x), strict=True):
                p0[i], p1[i] = self._vote(d[i], neighbours)
        return p0, p1

    def _distance_vote(self, d: FloatArray) -> tuple[FloatArray, FloatArray]:
        k = self._k
        if self._n > k:
            idx = np.argpartition(d, k - 1, axis=1)[:, :k]
        else:
            idx = np.broadcast_to(np.arange(self._n), d.shape)
        dist = np.take_along_axis(d, idx, axis=1)
        order = np.argsort(dist, axis=1, kind="stable")
        dist = np.take_along_axis(dist, order, axis=1)
        ones = self._y1[np.take_along_axis(idx, order, axis=1)]
        zero = dist == 0.0
        with np.errstate(divide="ignore"):
            weight = 1.0 / np.sqrt(dist)
        exact = zero.any(axis=1)
        weight[exact] = zero[exact]
        s0 = np.zeros(d.shape[0])
        s1 = np.zeros(d.shape[0])
        for j in range(k):  # same accumulation order as sklearn (nearest first)
            s1 += np.where(ones[:, j], weight[:, j], 0.0)
            s0 += np.where(ones[:, j], 0.0, weight[:, j])
        norm = s0 + s1
        return s0 / norm, s1 / norm


# ------------------------------------------------------------------------------ svm


def _libsvm_sigmoid(dec: float, a: float, b: float) -> float:
    """libsvm's ``sigmoid_predict``: Platt's P(first class | decision value)."""
    f = dec * a + b
    if f >= 0:
        e = math.exp(-f)
        return e / (1.0 + e)
    return 1.0 / (1 + math.exp(f))


def _libsvm_two_class(r: float, eps: float = 0.005 / 2, max_iter: int = 100) -> tuple[float, float]:
    """libsvm's ``multiclass_probability`` for k=2, pairwise P(class 0 vs 1) = ``r``.

    Same operations in the same order as the C loop, so results agree to the last bit
    except where libsvm's BLAS kernel rounds the decision value differently.
    """
    r10 = 1 - r
    q00 = 0 + r10 * r10
    q01 = -r10 * r
    q11 = 0 + r * r
    p0 = p1 = 1.0 / 2
    for _ in range(max_iter):
        qp0 = 0 + q00 * p0 + q01 * p1
        qp1 = 0 + q01 * p0 + q11 * p1
        pqp = 0 + p0 * qp0 + p1 * qp1
        if max(abs(qp0 - pqp), abs(qp1 - pqp)) < eps:
            break
        # t = 0
        diff = (-qp0 + pqp) / q00
        p0 += diff
        pqp = (pqp + diff * (diff * q00 + 2 * qp0)) / (1 + diff) / (1 + diff)
        qp0 = (qp0 + diff * q00) / (1 + diff)
        p0 /= 1 + diff
        qp1 = (qp1 + diff * q01) / (1 + diff)
        p1 /= 1 + diff
        # t = 1 (its updates of pqp and Qp are dead: both are recomputed above)
        diff = (-qp1 + pqp) / q11
        p1 += diff
        p0 /= 1 + diff
        p1 /= 1 + diff
    return p0, p1


def _libsvm_two_class_many(
    r: FloatArray, eps: float = 0.005 / 2, max_iter: int = 100
) -> tuple[FloatArray, FloatArray]:
    """Vectorised :func:`_libsvm_two_class` (rows stop independently, as in C)."""
    r10 = 1 - r
    q00 = 0 + r10 * r10
    q01 = -r10 * r
    q11 = 0 + r * r
    p0 = np.full(r.shape, 0.5)
    p1 = np.full(r.shape, 0.5)
    active = np.ones(r.shape, dtype=bool)
    for _ in range(max_iter):
        qp0 = 0 + q00 * p0 + q01 * p1
        qp1 = 0 + q01 * p0 + q11 * p1
        pqp = 0 + p0 * qp0 + p1 * qp1
        active &= ~(np.maximum(np.abs(qp0 - pqp), np.abs(qp1 - pqp)) < eps)
        if not active.any():
            break
        diff = (-qp0 + pqp) / q00
        n0 = p0 + diff
        pqp = (pqp + diff * (diff * q00 + 2 * qp0)) / (1 + diff) / (1 + diff)
        qp0 = (qp0 + diff * q00) / (1 + diff)
        n0 = n0 / (1 + diff)
        qp1 = (qp1 + diff * q01) / (1 + diff)
        n1 = p1 / (1 + diff)
        diff = (-qp1 + pqp) / q11
        n1 = n1 + diff
        n0 = n0 / (1 + diff)
        n1 = n1 / (1 + diff)
        p0 = np.where(active, n0, p0)
        p1 = np.where(active, n1, p1)
    return p0, p1


class _SVCPredictor(_Compiled):
    """SVC(kernel="rbf", probability=True), binary, as sklearn's libsvm computes it."""

    family = "svm_rbf"

    def __init__(self, scaling: _Scaling, model: Any) -> None:
        super().__init__(scaling)
        if model.kernel != "rbf" or not model.probability or model._sparse:
            raise _UnsupportedError("not a dense rbf SVC with probability=True")
        prob_a = np.asarray(model._probA, dtype=np.float64).reshape(-1)
        prob_b = np.asarray(model._probB, dtype=np.float64).reshape(-1)
        sv = np.asarray(model.support_vectors_, dtype=np.float64)
        coef = np.asarray(model._dual_coef_, dtype=np.float64)
        if prob_a.shape != (1,) or prob_b.shape != (1,) or sv.ndim != 2 or sv.shape[1] != 3:
            raise _UnsupportedError("unexpected SVC state")
        if coef.shape != (1, sv.shape[0]):
            raise _UnsupportedError("unexpected dual_coef shape")
        self._pa, self._pb = float(prob_a[0]), float(prob_b[0])
        self._coef = np.ascontiguousarray(coef[0])
        # libsvm's rho is -_intercept_; decision = sum(coef * K) - rho.
        self._rho = -float(np.asarray(model._intercept_, dtype=np.float64).reshape(-1)[0])
        self._neg_gamma = -float(model._gamma)
        self._sva = np.ascontiguousarray(sv[:, 1])
        self._svs = np.ascontiguousarray(sv[:, 2])
        # exp(-γ|x - sv|²) = exp(-γ(g - sv_g)²) · exp(-γ((a - sv_a)² + (s - sv_s)²)):
        # the Gender factor is folded into the dual coefficients, per Gender.
        self._coef_by_gender = {
            g: self._coef * np.exp(self._neg_gamma * (sv[:, 0] - code) ** 2)
            for g, code in scaling.codes.items()
        }
        self._coef_arr = self._per_gender(self._coef_by_gender).astype(np.float64)

    def predict_pair_one(self, gender: str, age: float, salary: float) -> tuple[float, float]:
        """RBF decision value → clipped Platt sigmoid → libsvm's two-class solver."""
        try:
            coef = self._coef_by_gender[gender]
        except (KeyError, TypeError):
            raise _unknown_gender(gender) from None
        a, s = self._scaled(age, salary)
        k = self._sva - a
        k *= k
        t = self._svs - s
        t *= t
        k += t
        k *= self._neg_gamma
        np.exp(k, out=k)
        dec = float(coef @ k) - self._rho
        r = min(
            max(_libsvm_sigmoid(dec, self._pa, self._pb), _LIBSVM_MIN_PROB), 1 - _LIBSVM_MIN_PROB
        )
        return _libsvm_two_class(r)

    def predict_pair_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[FloatArray, FloatArray]:
        """Vectorised :meth:`predict_pair_one`, in blocks of rows."""
        gidx, _, a, s = self._scaling.many(genders, ages, salaries)
        dec = np.empty(a.shape[0])
        for start in range(0, a.shape[0], _CHUNK):
            block = slice(start, start + _CHUNK)
            k = self._sva - a[block, None]
            k *= k
            t = self._svs - s[block, None]
            t *= t
            k += t
            k *= self._neg_gamma
            np.exp(k, out=k)
            dec[block] = np.einsum("ij,ij->i", k, self._coef_arr[gidx[block]]) - self._rho
        f = dec * self._pa + self._pb
        e = np.exp(-np.abs(f))  # exp(-f) where f >= 0, exp(f) otherwise
        r = np.where(f >= 0, e / (1.0 + e), 1.0 / (1 + e))
        r = np.minimum(np.maximum(r, _LIBSVM_MIN_PROB), 1 - _LIBSVM_MIN_PROB)
        return _libsvm_two_class_many(r)


# ---------------------------------------------------------------------------- trees


def _trees(model: Any) -> list[Any]:
    """The fitted ``tree_`` objects of a supported forest or boosting model, in order."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    if type(model) is RandomForestClassifier:
        if model.n_outputs_ != 1:
            raise _UnsupportedError("multi-output forest")
        return [est.tree_ for est in model.estimators_]
    if type(model) is GradientBoostingClassifier:
        from sklearn.dummy import DummyClassifier

        if model.loss != "log_loss" or model.n_trees_per_iteration_ != 1:
            raise _UnsupportedError("not a binary log-loss GradientBoostingClassifier")
        if not (isinstance(model.init_, str) or type(model.init_) is DummyClassifier):
            raise _UnsupportedError("init estimator depends on the features")
        return [est.tree_ for est in np.asarray(model.estimators_)[:, 0]]
    raise _UnsupportedError(f"{type(model).__name__} is not a supported tree ensemble")


def _split_thresholds(trees: list[Any]) -> list[FloatArray]:
    """Sorted distinct thresholds used by the splits on each of the three features."""
    per_feature: list[list[FloatArray]] = [[], [], []]
    for tree in trees:
        internal = tree.children_left != -1
        feature, threshold = tree.feature[internal], tree.threshold[internal]
        if np.any((feature < 0) | (feature > 2)):
            raise _UnsupportedError("split on an unknown feature")
        for j in range(3):
            per_feature[j].append(threshold[feature == j])
    return [np.unique(np.concatenate([np.zeros(0), *parts])) for parts in per_feature]


def _representatives(thresholds: FloatArray) -> npt.NDArray[np.float32]:
    """One float32 value inside each cell (-inf, t0], (t0, t1], ..., (t_last, +inf).

    Cell 0 gets the largest float32 <= t0; cell i > 0 the smallest float32 > t(i-1).
    Cells containing no float32 value are never looked up, whatever they hold.
    """
    if thresholds.size == 0:
        return np.zeros(1, dtype=np.float32)
    f32 = thresholds.astype(np.float32)
    above = np.where(
        f32.astype(np.float64) > thresholds, f32, np.nextafter(f32, np.float32(np.inf))
    )
    first = f32[0] if float(f32[0]) <= thresholds[0] else np.nextafter(f32[0], np.float32(-np.inf))
    return np.concatenate([np.array([first], dtype=np.float32), above.astype(np.float32)])


def _as_float32(x: FloatArray) -> FloatArray:
    """Round to float32 (as sklearn's tree input validation does), back as float64."""
    with np.errstate(over="ignore"):
        out = x.astype(np.float32).astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError("Age and EstimatedSalary are too large for the tree model")
    return out


class _TreeGridPredictor(_Compiled):
    """Forest / boosting as a lookup table over the cells of the split-threshold grid.

    Every tree compares ``float32(feature) <= threshold``, so all records whose float32
    features fall in the same cell of the grid spanned by all thresholds take the same
    path in every tree and get bit-identical probabilities. The table holds the fitted
    estimator's own ``predict_proba`` of one representative per cell.
    """

    mode = "grid"
    DERIVED = ("_p0", "_p1", "_ta", "_ts")
    """Attributes left out of the cache (:func:`predictor_state`) and rebuilt by ``_derive``."""

    def __init__(self, scaling: _Scaling, model: Any, family: str, max_cells: int) -> None:
        super().__init__(scaling)
        self.family = family
        thr_g, thr_a, thr_s = _split_thresholds(_trees(model))
        reps = [_representatives(t) for t in (thr_g, thr_a, thr_s)]
        ng, na, ns = (r.shape[0] for r in reps)
        cells = ng * na * ns
        if cells > max_cells:
            raise _GridTooLargeError(f"{cells} cells > {max_cells}")
        grid = np.stack(np.meshgrid(*reps, indexing="ij"), axis=-1).reshape(-1, 3)
        proba = np.vstack(
            [
                np.asarray(model.predict_proba(grid[i : i + 262_144]), dtype=np.float64)
                for i in range(0, grid.shape[0], 262_144)
            ]
        )
        self._p0_arr = np.ascontiguousarray(proba[:, 0])
        self._p1_arr = np.ascontiguousarray(proba[:, 1])
        self._thr_g, self._thr_a, self._thr_s = thr_g, thr_a, thr_s
        self._na, self._ns = na, ns
        self._offset = {
            g: bisect.bisect_left(thr_g.tolist(), float(np.float32(code))) * na * ns
            for g, code in scaling.codes.items()
        }
        self._derive()

    def _derive(self) -> None:
        # Python lists for the one-record path: indexing them beats numpy scalars.
        self._p0, self._p1 = self._p0_arr.tolist(), self._p1_arr.tolist()
        self._ta, self._ts = self._thr_a.tolist(), self._thr_s.tolist()

    def predict_pair_one(self, gender: str, age: float, salary: float) -> tuple[float, float]:
        """Two bisects and a table lookup."""
        try:
            offset = self._offset[gender]
        except (KeyError, TypeError):
            raise _unknown_gender(gender) from None
        a, s = self._scaled(age, salary)
        try:
            a32, s32 = _FLOAT32_PAIR.unpack(_FLOAT32_PAIR.pack(a, s))
        except OverflowError:
            raise _not_finite(age, salary) from None
        i = (
            offset
            + bisect.bisect_left(self._ta, a32) * self._ns
            + bisect.bisect_left(self._ts, s32)
        )
        return self._p0[i], self._p1[i]

    def predict_pair_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[FloatArray, FloatArray]:
        """Vectorised :meth:`predict_pair_one` (``searchsorted`` = ``bisect_left``)."""
        _, g, a, s = self._scaling.many(genders, ages, salaries)
        cg = np.searchsorted(self._thr_g, _as_float32(g), side="left")
        ca = np.searchsorted(self._thr_a, _as_float32(a), side="left")
        cs = np.searchsorted(self._thr_s, _as_float32(s), side="left")
        idx = (cg * self._na + ca) * self._ns + cs
        return self._p0_arr[idx], self._p1_arr[idx]


class _GridTooLargeError(_UnsupportedError):
    """The threshold grid is larger than the configured limit."""


class _TreeWalkPredictor(_Compiled):
    """Forest / boosting by walking flattened trees in plain Python (no table).

    Used when the threshold grid is too large. The many-record path calls the fitted
    estimator on the transformed float32 matrix.
    """

    mode = "walk"

    def __init__(self, scaling: _Scaling, model: Any, family: str) -> None:
        super().__init__(scaling)
        self.family = family
        self._model = model
        trees = _trees(model)
        _split_thresholds(trees)  # validates the split features
        self._forest = family == "random_forest"
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        value0: list[float] = []
        value1: list[float] = []
        self._roots: list[int] = []
        scale = 1.0 if self._forest else float(model.learning_rate)
        for tree in trees:
            offset = len(feature)
            self._roots.append(offset)
            is_leaf = tree.children_left == -1
            feature.extend(np.where(is_leaf, 0, tree.feature).tolist())
            threshold.extend(tree.threshold.tolist())
            left.extend(np.where(is_leaf, -1, tree.children_left + offset).tolist())
            right.extend(np.where(is_leaf, -1, tree.children_right + offset).tolist())
            values = np.asarray(tree.value, dtype=np.float64)[:, 0, :]
            if self._forest:
                value0.extend(values[:, 0].tolist())
                value1.extend(values[:, 1].tolist())
            else:
                value1.extend((scale * values[:, 0]).tolist())
        self._feature, self._threshold = feature, threshold
        self._left, self._right = left, right
        self._value0, self._value1 = value0, value1
        self._codes = dict(scaling.codes)
        self._n_trees = float(len(trees))
        self._init_raw = 0.0 if self._forest else self._boosting_init(model)

    def _boosting_init(self, model: Any) -> float:
        """The constant raw prediction of the init estimator."""
        zero = np.zeros((1, 3), dtype=np.float32)
        raw_init = getattr(model, "_raw_predict_init", None)
        if raw_init is not None:
            return float(np.asarray(raw_init(zero)).reshape(-1)[0])
        return float(model.decision_function(zero)[0]) - self._walk((0.0, 0.0, 0.0))[1]

    def _walk(self, x: tuple[float, float, float], start: float = 0.0) -> tuple[float, float]:
        """Sum the leaf values of every tree, in tree order, onto ``(0.0, start)``."""
        feature, threshold, left, right = self._feature, self._threshold, self._left, self._right
        value0, value1 = self._value0, self._value1
        s0, s1 = 0.0, start
        for root in self._roots:
            node, child = root, left[root]
            while child >= 0:
                node = child if x[feature[node]] <= threshold[node] else right[node]
                child = left[node]
            if value0:
                s0 += value0[node]
            s1 += value1[node]
        return s0, s1

    def predict_pair_one(self, gender: str, age: float, salary: float) -> tuple[float, float]:
        """Mean leaf probabilities (forest) or expit of the boosted raw score."""
        try:
            code = self._codes[gender]
        except (KeyError, TypeError):
            raise _unknown_gender(gender) from None
        a, s = self._scaled(age, salary)
        try:
            a32, s32 = _FLOAT32_PAIR.unpack(_FLOAT32_PAIR.pack(a, s))
        except OverflowError:
            raise _not_finite(age, salary) from None
        if self._forest:
            s0, s1 = self._walk((code, a32, s32))
            return s0 / self._n_trees, s1 / self._n_trees
        # Boosting: raw = init, then raw += learning_rate * leaf value, stage by stage.
        p1 = _expit(self._walk((code, a32, s32), self._init_raw)[1])
        return 1.0 - p1, p1

    def predict_pair_many(
        self, genders: Genders, ages: Numbers, salaries: Numbers
    ) -> tuple[FloatArray, FloatArray]:
        """The fitted estimator on the transformed float32 matrix."""
        _, g, a, s = self._scaling.many(genders, ages, salaries)
        if g.shape[0] == 0:
            return np.zeros(0), np.zeros(0)
        x = np.column_stack([g, _as_float32(a), _as_float32(s)]).astype(np.float32)
        proba = np.asarray(self._model.predict_proba(x), dtype=np.float64)
        return proba[:, 0].copy(), proba[:, 1].copy()


def _tree_predictor(family: str) -> Callable[[_Scaling, Any, int], FastPredictor]:
    def build(scaling: _Scaling, model: Any, max_grid_cells: int) -> FastPredictor:
        try:
            return _TreeGridPredictor(scaling, model, family, max_grid_cells)
        except _GridTooLargeError as exc:
            logger.info("%s: %s, walking the trees instead", family, exc)
            return _TreeWalkPredictor(scaling, model, family)

    return build


# -------------------------------------------------------------------------- compile


def _builders() -> dict[type, Callable[[_Scaling, Any, int], FastPredictor]]:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    return {
        LogisticRegression: lambda sc, m, _: _LogisticPredictor(sc, m),
        GaussianNB: lambda sc, m, _: _GaussianNBPredictor(sc, m),
        KNeighborsClassifier: lambda sc, m, _: _KNNPredictor(sc, m),
        SVC: lambda sc, m, _: _SVCPredictor(sc, m),
        RandomForestClassifier: _tree_predictor("random_forest"),
        GradientBoostingClassifier: _tree_predictor("gradient_boosting"),
    }


def _probe_inputs(n: int = 256) -> tuple[list[str], FloatArray, FloatArray]:
    """Deterministic valid records for the compile-time self-check.

    A third spread over the API bounds, a third over the usual customer range and a
    third on whole years and thousands, like the training data (where ties live).
    """
    rng = np.random.default_rng(20240611)
    age, salary = BOUNDS[AGE], BOUNDS[SALARY]
    third = n // 3
    ages = np.concatenate(
        [
            rng.uniform(age.minimum, age.maximum, third),
            rng.uniform(18, 65, third),
            rng.integers(18, 66, n - 2 * third).astype(np.float64),
        ]
    )
    salaries = np.concatenate(
        [
            rng.uniform(salary.minimum, salary.maximum, third),
            rng.uniform(10_000, 160_000, third),
            1000.0 * rng.integers(10, 161, n - 2 * third),
        ]
    )
    ages[:4] = [age.minimum, age.maximum, age.minimum, age.maximum]
    salaries[:4] = [salary.minimum, salary.minimum, salary.maximum, salary.maximum]
    genders = [GENDERS[i % len(GENDERS)] for i in range(n)]
    return genders, ages, salaries


def _disagreement(predictor: FastPredictor, pipeline: Any, atol: float = 1e-9) -> str | None:
    """Why the compiled predictor does not reproduce the pipeline on probe records."""
    import pandas as pd

    genders, ages, salaries = _probe_inputs()
    frame = pd.DataFrame({GENDER: genders, AGE: ages, SALARY: salaries}, columns=FEATURES)
    expected = np.asarray(pipeline.predict_proba(frame), dtype=np.float64)[:, 1]
    many = predictor.predict_proba_many(genders, ages, salaries)
    worst = float(np.max(np.abs(many - expected)))
    if not worst <= atol:
        return f"predict_proba_many differs by {worst:.3g} on probe records"
    for i in range(0, len(genders), 16):
        one = predictor.predict_proba_one(genders[i], float(ages[i]), float(salaries[i]))
        if not abs(one - expected[i]) <= atol:
            return f"predict_proba_one differs by {abs(one - expected[i]):.3g} on a probe record"
    return None


def _generic(pipeline: Any, reason: str) -> GenericPredictor:
    logger.info("serving fast path not compiled (%s); using the generic predictor", reason)
    return GenericPredictor(pipeline, reason)


def compile_pipeline(
    pipeline: Pipeline,
    *,
    max_grid_cells: int = DEFAULT_MAX_GRID_CELLS,
    verify: bool = True,
) -> FastPredictor:
    """Compile a fitted Pipeline into the fastest exact predictor available.

    ``max_grid_cells`` bounds the lookup table of tree ensembles (above it the trees
    are walked). With ``verify`` the compiled predictor is checked against
    ``pipeline.predict_proba`` on 256 probe records; on any disagreement, or for an
    unsupported pipeline, the result is a :class:`GenericPredictor`. Never raises for a
    fitted Pipeline; raises sklearn's ``NotFittedError`` for an unfitted one.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(pipeline)
    try:
        scaling, model = _extract(pipeline)
        builder = _builders().get(type(model))
        if builder is None:
            raise _UnsupportedError(f"no compiled form for {type(model).__name__}")
        predictor = builder(scaling, model, max_grid_cells)
    except _UnsupportedError as exc:
        return _generic(pipeline, str(exc))
    except Exception as exc:  # a surprise in a fitted estimator's internals
        logger.warning("compiling the serving fast path failed", exc_info=True)
        return _generic(pipeline, f"compilation failed: {exc!r}")
    if verify:
        try:
            problem = _disagreement(predictor, pipeline)
        except Exception as exc:
            logger.warning("verifying the serving fast path failed", exc_info=True)
            problem = f"verification failed: {exc!r}"
        if problem is not None:
            logger.warning("compiled %s predictor rejected: %s", predictor.family, problem)
            return GenericPredictor(pipeline, problem)
    return predictor


# ------------------------------------------------------------------- plain-number state
# A compiled predictor is numbers only, so it can be stored as JSON + numpy arrays and
# rebuilt without pickle: only the classes listed here are ever instantiated from a state.
_STORABLE: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        _Scaling,
        _LogisticPredictor,
        _GaussianNBPredictor,
        _SVCPredictor,
        _TreeGridPredictor,
    )
}


def predictor_state(predictor: FastPredictor) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a compiled predictor into JSON-able state and numpy arrays.

    Attributes a class names in ``DERIVED`` are left out (its ``_derive`` rebuilds them on
    load). Raises ``NotImplementedError`` for predictors that hold fitted scikit-learn
    objects (the generic fallback, KNN with its search tree, trees in "walk" mode).
    """
    arrays: dict[str, Any] = {}

    def encode(value: Any) -> Any:  # noqa: PLR0911
        if isinstance(value, bool | str | None):
            return value
        if isinstance(value, int | float) and not isinstance(value, np.generic):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise NotImplementedError("object arrays are not stored")
            name = f"a{len(arrays)}"
            arrays[name] = value
            return {"__array__": name}
        if isinstance(value, tuple):
            return {"__tuple__": [encode(v) for v in value]}
        if isinstance(value, list):
            return [encode(v) for v in value]
        if isinstance(value, dict):
            return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
        name = type(value).__name__
        if _STORABLE.get(name) is type(value):
            derived = getattr(value, "DERIVED", ())
            state = {k: encode(v) for k, v in vars(value).items() if k not in derived}
            return {"__obj__": name, "state": state}
        raise NotImplementedError(f"{name} cannot be stored as plain numbers")

    return encode(predictor), arrays


def predictor_from_state(state: dict[str, Any], arrays: dict[str, Any]) -> FastPredictor:
    """Rebuild a predictor stored by :func:`predictor_state`."""

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__tuple__" in value:
            return tuple(decode(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {decode(k): decode(v) for k, v in value["__dict__"]}
        cls = _STORABLE[value["__obj__"]]
        obj = cls.__new__(cls)
        obj.__dict__.update({k: decode(v) for k, v in value["state"].items()})
        if getattr(obj, "DERIVED", ()):
            obj._derive()  # rebuild what was left out of the stored state
        return obj

    predictor = decode(state)
    if not isinstance(predictor, FastPredictor):
        raise TypeError("the stored state is not a predictor")
    return predictor
