"""Property-based tests: every corruption of the raw CSV gives a named error, never a crash.

That nothing downstream runs after such an error (lake outputs and registry untouched) is
checked through the real CLI and flow in tests/test_cli.py."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socialads.data.lake import bundled_dataset
from socialads.data.schema import FEATURES, TARGET
from socialads.data.validation import load_and_validate
from socialads.errors import DataValidationError

CLEAN = pd.read_csv(io.BytesIO(bundled_dataset()), dtype=str)
COLUMNS = [*FEATURES, TARGET]


def to_bytes(frame: pd.DataFrame, sep: str = ",") -> bytes:
    return frame.to_csv(index=False, sep=sep).encode()


@st.composite
def corrupted(draw: st.DrawFn) -> tuple[str, bytes]:  # noqa: PLR0911
    """A copy of the real file with one kind of corruption; returns (kind, bytes)."""
    frame = CLEAN.copy()
    rows = draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=5, unique=True))
    kind = draw(
        st.sampled_from(
            [
                "missing-column",
                "extra-column",
                "text-in-number",
                "null",
                "out-of-bounds",
                "bad-gender",
                "bad-target",
                "empty",
                "header-only",
                "delimiter",
                "not-utf8",
                "single-class",
            ]
        )
    )
    column = draw(st.sampled_from(COLUMNS))
    if kind == "missing-column":
        return kind, to_bytes(frame.drop(columns=[column]))
    if kind == "extra-column":
        name = draw(st.text(st.characters(categories=["L"]), min_size=1, max_size=8))
        frame[f"x_{name}"] = "1"
        return kind, to_bytes(frame)
    if kind == "text-in-number":
        col = draw(st.sampled_from(["Age", "EstimatedSalary", TARGET]))
        word = draw(st.text(st.characters(categories=["L"]), min_size=1, max_size=6))
        frame.loc[rows, col] = word
        return kind, to_bytes(frame)
    if kind == "null":
        frame.loc[rows, column] = None
        return kind, to_bytes(frame)
    if kind == "out-of-bounds":
        col = draw(st.sampled_from(["Age", "EstimatedSalary"]))
        value = draw(
            st.one_of(
                st.floats(max_value=-0.01),
                st.floats(min_value=1e7),
                st.sampled_from([float("inf"), float("-inf")]),
            )
        )
        frame.loc[rows, col] = repr(value) if col == "EstimatedSalary" else str(value - 1e3)
        return kind, to_bytes(frame)
    if kind == "bad-gender":
        value = draw(
            st.text(min_size=1, max_size=8).filter(
                lambda s: (
                    s.strip().casefold() not in ("male", "female")
                    and s.strip() != ""
                    and "," not in s
                    and "\n" not in s
                    and "\r" not in s
                    and '"' not in s
                )
            )
        )
        frame.loc[rows, "Gender"] = value
        return kind, to_bytes(frame)
    if kind == "bad-target":
        frame.loc[rows, TARGET] = str(draw(st.integers(2, 10**6)))
        return kind, to_bytes(frame)
    if kind == "empty":
        return kind, draw(st.sampled_from([b"", b"\n", b"   \r\n"]))
    if kind == "header-only":
        return kind, (",".join(frame.columns) + "\r\n").encode()
    if kind == "delimiter":
        return kind, to_bytes(frame, sep=draw(st.sampled_from([";", "\t", "|"])))
    if kind == "not-utf8":
        data = bytearray(to_bytes(frame))
        position = draw(st.integers(0, len(data) - 1))
        data[position:position] = b"\xff\xfe"
        return kind, bytes(data)
    only = draw(st.sampled_from(["0", "1"]))
    return kind, to_bytes(frame[frame[TARGET] == only])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_every_corruption_is_a_named_error(case: tuple[str, bytes]) -> None:
    _kind, data = case
    with pytest.raises(DataValidationError) as info:
        load_and_validate(data)
    message = str(info.value)
    assert message.startswith("invalid data: ")
    assert len(message) < 2000, "messages name the first rows only"
