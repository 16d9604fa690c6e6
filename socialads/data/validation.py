"""Validation of the raw CSV against the declared schema (:mod:`socialads.data.schema`)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from socialads.data.schema import (
    ALLOWED_COLUMNS,
    BOUNDS,
    CLASSES,
    FEATURES,
    GENDER,
    GENDERS,
    NUMERIC_FEATURES,
    REQUIRED_COLUMNS,
    TARGET,
    normalise_gender,
)
from socialads.errors import DataValidationError

if TYPE_CHECKING:
    import pandas as pd

MAX_ROWS_SHOWN = 5
HEADER_LINES = 1


def _lines(index: pd.Index) -> str:
    """File line numbers (header is line 1) of the first offending rows."""
    shown = [str(int(i) + HEADER_LINES + 1) for i in index[:MAX_ROWS_SHOWN]]
    more = f" and {len(index) - MAX_ROWS_SHOWN} more" if len(index) > MAX_ROWS_SHOWN else ""
    return f"line{'s' if len(index) > 1 else ''} {', '.join(shown)}{more}"


def parse_csv(data: bytes) -> pd.DataFrame:
    """Parse raw bytes as CSV with every cell as text (types are checked afterwards)."""
    import pandas as pd

    if not data.strip():
        raise DataValidationError(["the file is empty"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            [f"the file is not UTF-8 text (bad byte at offset {exc.start})"]
        ) from exc
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataValidationError([f"the file is not valid CSV: {exc}"]) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _check_columns(columns: list[str]) -> list[str]:
    problems = []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    extra = [c for c in columns if c not in ALLOWED_COLUMNS]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if missing:
        problems.append(f"missing column(s) {missing}; found {columns}")
    if extra:
        problems.append(f"unexpected column(s) {extra}; allowed {list(ALLOWED_COLUMNS)}")
    if duplicated:
        problems.append(f"duplicated column(s) {duplicated}")
    return problems


def _check_values(column: str, raw: pd.Series) -> tuple[pd.Series, list[str]]:
    """Clean one column; returns the cleaned values (NaN where bad) and the problems."""
    import pandas as pd

    problems = []
    nulls = raw.isna() | (raw.astype(str).str.strip() == "")
    if nulls.any():
        problems.append(f"column {column!r}: empty values at {_lines(raw.index[nulls])}")
    present = raw[~nulls]
    if column == GENDER:
        genders = present.map(_gender_or_none)
        bad = present.index[genders.isna()]
        if len(bad):
            problems.append(
                f"column {column!r}: values not in {list(GENDERS)} (any case) at {_lines(bad)}"
                f", e.g. {present[bad[0]]!r}"
            )
        return genders, problems
    numbers = pd.to_numeric(present, errors="coerce")
    bad = present.index[numbers.isna()]
    if len(bad):
        problems.append(
            f"column {column!r}: not a number at {_lines(bad)}, e.g. {present[bad[0]]!r}"
        )
    valid = numbers.dropna()
    if column in NUMERIC_FEATURES:
        bounds = BOUNDS[column]
        out = valid.index[~valid.map(bounds.contains)]
        rule = bounds.describe()
    else:
        out = valid.index[~valid.isin(CLASSES)]
        rule = "0 or 1"
    if len(out):
        problems.append(
            f"column {column!r}: values must be {rule} at {_lines(out)}, e.g. {present[out[0]]!r}"
        )
    return numbers, problems


def validate(frame: pd.DataFrame, *, min_rows_per_class: int = 2) -> pd.DataFrame:
    """Check a raw frame and return it clean: canonical Gender, numeric features, int target.

    Raises :class:`DataValidationError` listing every problem found, each naming the column
    and the first offending lines.
    """
    import pandas as pd

    problems = _check_columns(list(frame.columns))
    if problems:
        raise DataValidationError(problems)
    if frame.empty:
        raise DataValidationError(["the file has a header but no rows"])

    clean = pd.DataFrame(index=frame.index)
    for column in (*FEATURES, TARGET):
        clean[column], found = _check_values(column, frame[column])
        problems += found
    if problems:
        raise DataValidationError(problems)

    clean[TARGET] = clean[TARGET].astype(int)
    counts = clean[TARGET].value_counts()
    too_few = [c for c in CLASSES if counts.get(c, 0) < min_rows_per_class]
    if too_few:
        raise DataValidationError(
            [
                f"column {TARGET!r}: class(es) {too_few} have fewer than {min_rows_per_class} "
                f"rows (counts {counts.to_dict()}); a model needs both classes"
            ]
        )
    return clean[[*FEATURES, TARGET]].reset_index(drop=True)


def _gender_or_none(value: str) -> str | None:
    try:
        return normalise_gender(value)
    except ValueError:
        return None


def load_and_validate(data: bytes) -> pd.DataFrame:
    """Parse and validate raw CSV bytes in one step."""
    return validate(parse_csv(data))
