"""The attrs validators of the policies (``RetryPolicy``, ``ThrottlePolicy``), in one place.

Each raises :class:`ValueError` naming the field and the rule, as the constructors document.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["boolean", "count", "fraction", "non_negative", "optional", "positive", "seconds"]

Validator = Callable[[object, "attrs.Attribute[Any]", Any], None]


def _finite(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < math.inf


def non_negative(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A finite number >= 0."""
    if not _finite(value):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def positive(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A finite number > 0."""
    non_negative(inst, attribute, value)
    if not value:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def fraction(inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    """A number in (0, 1]."""
    non_negative(inst, attribute, value)
    if not 0 < value <= 1:
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value!r}")


def seconds(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A finite number of seconds >= 0."""
    if not _finite(value):
        raise ValueError(f"{attribute.name} must be a finite number of seconds >= 0, got {value!r}")


def count(minimum: int) -> Validator:
    """An int >= ``minimum`` (not a bool)."""

    def validate(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{attribute.name} must be an int >= {minimum}, got {value!r}")

    return validate


def optional(validator: Validator) -> Validator:
    """``None``, or what ``validator`` accepts."""

    def validate(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            validator(inst, attribute, value)

    return validate


def boolean(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be True or False, got {value!r}")  # noqa: TRY004 - the constructors raise ValueError
