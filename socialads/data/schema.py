"""The data contract, declared once: columns, bounds, Gender normalisation, labels.

Validation of raw files and the API's request models both read from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

USER_ID = "User ID"
GENDER = "Gender"
AGE = "Age"
SALARY = "EstimatedSalary"
TARGET = "Purchased"

FEATURES: tuple[str, ...] = (GENDER, AGE, SALARY)
NUMERIC_FEATURES: tuple[str, ...] = (AGE, SALARY)
ALLOWED_COLUMNS: tuple[str, ...] = (USER_ID, *FEATURES, TARGET)
REQUIRED_COLUMNS: tuple[str, ...] = (*FEATURES, TARGET)

GENDERS: tuple[str, ...] = ("Female", "Male")
"""Canonical Gender values, in encoding order (Female → 0, Male → 1, as LabelEncoder did)."""

CLASSES: tuple[int, ...] = (0, 1)
LABELS: dict[int, str] = {0: "NO COMPRA", 1: "COMPRA"}


@dataclass(frozen=True)
class Bounds:
    """Inclusive range of a numeric feature."""

    minimum: float
    maximum: float
    unit: str = ""

    def contains(self, value: float) -> bool:
        """True when ``value`` is a finite number inside the range."""
        return math.isfinite(value) and self.minimum <= value <= self.maximum

    def describe(self) -> str:
        """Human text of the range, e.g. ``between 18 and 100 years``."""
        unit = f" {self.unit}" if self.unit else ""
        return f"between {_number(self.minimum)} and {_number(self.maximum)}{unit}"


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,}"


BOUNDS: dict[str, Bounds] = {
    AGE: Bounds(18, 100, "years"),
    SALARY: Bounds(0, 1_000_000),
}


def normalise_gender(value: Any) -> str:
    """Return the canonical Gender for any letter case and surrounding spaces.

    Raises ``ValueError`` for anything that is not one of :data:`GENDERS`.
    """
    if not isinstance(value, str):
        raise ValueError(f"must be one of {', '.join(GENDERS)} (text), got {value!r}")
    cleaned = value.strip().casefold()
    for gender in GENDERS:
        if cleaned == gender.casefold():
            return gender
    raise ValueError(f"must be one of {', '.join(GENDERS)} in any letter case, got {value!r}")


def check_number(field: str, value: Any) -> float:
    """Return ``value`` as a float if it is a number within the field's bounds.

    Raises ``ValueError`` naming the bounds otherwise; booleans are not numbers here.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {value!r}")
    number = float(value)
    bounds = BOUNDS[field]
    if not bounds.contains(number):
        raise ValueError(f"must be {bounds.describe()}, got {value!r}")
    return number


def label_for(prediction: int) -> str:
    """The business label of a predicted class."""
    return LABELS[int(prediction)]
