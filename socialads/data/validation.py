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


def validate(frame: pd.DataFrame, *, min_rows_per_class: int = 2) -> pd.DataFrame:
    """Check a raw frame and return it clean: canonical Gender, numeric features, int target.

    Raises :class:`DataValidationError` listing every problem found, each naming the column
    and the first offending lines.
    """
    import pandas as pd

    problems: list[str] = []
    columns = list(frame.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    extra = [c for c in columns if c not in ALLOWED_COLUMNS]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if missing:
        problems.append(f"missing column(s) {missing}; found {columns}")
    if extra:
        problems.append(f"unexpected column(s) {extra}; allowed {list(ALLOWED_COLUMNS)}")
    if duplicated:
        problems.append(f"duplicated column(s) {duplicated}")
    if problems:
        raise DataValidationError(problems)
    if frame.empty:
        raise DataValidationError(["the file has a header but no rows"])

    clean = pd.DataFrame(index=frame.index)
    for column in (*FEATURES, TARGET):
        raw = frame[column]
        nulls = raw.isna() | (raw.astype(str).str.strip() == "")
        if nulls.any():
            problems.append(f"column {column!r}: empty values at {_lines(frame.index[nulls])}")
        present = raw[~nulls]
        if column == GENDER:
            clean[column] = present.map(_gender_or_none)
            bad = present.index[clean.loc[present.index, column].isna()]
            if len(bad):
                problems.append(
                    f"column {column!r}: values not in {list(GENDERS)} (any case) at {_lines(bad)}"
                    f", e.g. {present[bad[0]]!r}"
                )
            continue
        numbers = pd.to_numeric(present, errors="coerce")
        bad = present.index[numbers.isna()]
        if len(bad):
            problems.append(
                f"column {column!r}: not a number at {_lines(bad)}, e.g. {present[bad[0]]!r}"
            )
        clean[column] = numbers
        numbers = numbers.dropna()
        if column in NUMERIC_FEATURES:
            bounds = BOUNDS[column]
            out = numbers.index[~numbers.map(bounds.contains)]
            if len(out):
                problems.append(
                    f"column {column!r}: values must be {bounds.describe()} at {_lines(out)}"
                    f", e.g. {numbers[out[0]]:g}"
                )
        else:
            not_class = numbers.index[~numbers.isin(CLASSES)]
            if len(not_class):
                problems.append(
                    f"column {column!r}: values must be 0 or 1 at {_lines(not_class)}"
                    f", e.g. {present[not_class[0]]!r}"
                )
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
