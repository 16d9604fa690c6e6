"""Validation of the raw CSV: good files pass clean, bad ones name the column and lines."""

from __future__ import annotations

import pytest

from socialads.data.schema import GENDERS
from socialads.data.validation import load_and_validate
from socialads.errors import DataValidationError

HEADER = "User ID,Gender,Age,EstimatedSalary,Purchased"


def csv(*rows: str, header: str = HEADER) -> bytes:
    return "\r\n".join([header, *rows]).encode()


GOOD = ("1,Male,19,19000,0", "2,Female,35,20000,1", "3,Male,26,43000,0", "4,Female,27,57000,1")


def test_the_bundled_dataset_is_valid(raw_bytes: bytes) -> None:
    frame = load_and_validate(raw_bytes)
    assert len(frame) == 400
    assert list(frame.columns) == ["Gender", "Age", "EstimatedSalary", "Purchased"]
    assert set(frame["Gender"]) == set(GENDERS)
    assert frame["Purchased"].sum() == 143


def test_gender_in_any_case_and_integral_floats_are_accepted() -> None:
    frame = load_and_validate(
        csv(
            "1, MALE ,19,58000.0,0",
            "2,female,35.0,20000,1",
            "3,Male,26,43000,0",
            "4,FeMale,27,57000,1",
        )
    )
    assert list(frame["Gender"]) == ["Male", "Female", "Male", "Female"]
    assert frame["EstimatedSalary"].iloc[0] == 58000
    assert frame["Age"].iloc[1] == 35


def test_user_id_is_optional() -> None:
    rows = [r.split(",", 1)[1] for r in GOOD]
    assert len(load_and_validate(csv(*rows, header="Gender,Age,EstimatedSalary,Purchased"))) == 4


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (csv(*GOOD, header="User ID,Gender,Age,Purchased"), ["missing", "EstimatedSalary"]),
        (csv(*(r + ",x" for r in GOOD), header=HEADER + ",Notes"), ["unexpected", "Notes"]),
        (
            csv("1,Male,19,19000,0", "2,Robot,35,20000,1", *GOOD[2:]),
            ["'Gender'", "line 3", "Robot"],
        ),
        (csv("1,Male,nineteen,19000,0", *GOOD[1:]), ["'Age'", "not a number", "line 2"]),
        (csv("1,Male,,19000,0", *GOOD[1:]), ["'Age'", "empty", "line 2"]),
        (csv(*GOOD[:3], "4,Female,-3,57000,1"), ["'Age'", "between 18 and 100", "line 5"]),
        (csv(*GOOD[:3], "4,Female,30,-1,1"), ["'EstimatedSalary'", "line 5"]),
        (csv(*GOOD[:3], "4,Female,30,1000,2"), ["'Purchased'", "0 or 1", "line 5"]),
        (csv("1,Male,19,19000,0", "2,Male,20,20000,0", "3,Male,26,43000,0"), ["both classes"]),
        (b"", ["empty"]),
        (HEADER.encode(), ["no rows"]),
        (csv(*(r.replace(",", ";") for r in GOOD), header=HEADER.replace(",", ";")), ["missing"]),
        (csv(*GOOD).replace(b"Female", b"F\xe9male"), ["not UTF-8"]),
    ],
    ids=[
        "missing-column",
        "extra-column",
        "unknown-gender",
        "text-age",
        "null-age",
        "negative-age",
        "negative-salary",
        "bad-target",
        "single-class",
        "empty-file",
        "header-only",
        "wrong-delimiter",
        "not-utf8",
    ],
)
def test_bad_files_raise_a_named_error(data: bytes, fragments: list[str]) -> None:
    with pytest.raises(DataValidationError) as info:
        load_and_validate(data)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_only_the_first_offending_lines_are_listed() -> None:
    rows = [f"{i},Male,{200 + i},1000,{i % 2}" for i in range(1, 21)]
    with pytest.raises(DataValidationError) as info:
        load_and_validate(csv(*rows))
    message = str(info.value)
    assert "lines 2, 3, 4, 5, 6 and 15 more" in message
