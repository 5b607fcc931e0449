"""Argument and setting checks: one vocabulary and one message format for the whole package.

Every check raises ``ValueError("<name> must be <requirement>, got <value!r>")`` and returns the value
in its normal form (a float, an int). A bool is never a number here: ``True`` is not ``1``.

The checks import nothing beyond the standard library, so the pure-math layers (``distance``, ``losses``)
and the nnU-Net layers use the same ones. Trainers declare their settings as *rules* (``setting_rules``,
see :class:`~nnunet_sdm.training.base.nnUNetTrainerDistanceBase`): a rule is a callable
``rule(name, value) -> value`` made by :func:`number`, :func:`integer`, :func:`one_of` or
:func:`optional`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "Rule",
    "check_choice",
    "check_integer",
    "check_non_negative",
    "check_number",
    "check_positive",
    "check_same_shape",
    "integer",
    "non_negative",
    "number",
    "one_of",
    "optional",
    "positive",
]

#: ``rule(name, value)`` returns the checked value or raises ValueError naming ``name``
Rule = Callable[[str, Any], Any]


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bounds_text(minimum: float | None, maximum: float | None, above: bool) -> str:
    low = None if minimum is None else f"{'>' if above else '>='} {minimum:g}"
    high = None if maximum is None else f"<= {maximum:g}"
    if low and high:
        return f" in {'(' if above else '['}{minimum:g}, {maximum:g}]"
    return f" {low or high}" if (low or high) else ""


def check_number(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    above: bool = False,
) -> float:
    """``value`` as a float: a finite real number (not a bool) >= ``minimum`` (> with ``above``) and
    <= ``maximum``."""
    ok = _is_real(value) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if above else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        raise ValueError(
            f"{name} must be a finite number{_bounds_text(minimum, maximum, above)}, got {value!r}"
        )
    return float(value)


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    return check_number(name, value, minimum=0.0, above=True)


def check_non_negative(name: str, value: Any) -> float:
    """A finite number >= 0."""
    return check_number(name, value, minimum=0.0)


def check_integer(name: str, value: Any, minimum: int | None = 1) -> int:
    """``value`` as an int: an integral number (not a bool) >= ``minimum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or (minimum is not None and value < minimum)
    ):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """One of ``choices``."""
    # True == 1: a bool is a choice only where the choices are bools
    if value not in choices or (isinstance(value, bool) and not any(isinstance(c, bool) for c in choices)):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_same_shape(what: str, a: Any, b: Any, channels_first: bool = False) -> None:
    """Two arrays or tensors of the same shape; with ``channels_first`` also (B, C, *spatial)."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if channels_first and a.ndim < 3:
        raise ValueError(f"{what}: expected (B, C, *spatial), got shape {tuple(a.shape)}")


# ---- rules: checks bound to their bounds, for declared settings -----------------------------------------
def number(minimum: float | None = None, maximum: float | None = None, above: bool = False) -> Rule:
    """A rule for :func:`check_number` with these bounds."""

    def rule(name: str, value: Any) -> float:
        return check_number(name, value, minimum, maximum, above)

    return rule


def integer(minimum: int | None = 1) -> Rule:
    """A rule for :func:`check_integer`."""

    def rule(name: str, value: Any) -> int:
        return check_integer(name, value, minimum)

    return rule


def one_of(*choices: Any) -> Rule:
    """A rule for :func:`check_choice`."""

    def rule(name: str, value: Any) -> Any:
        return check_choice(name, value, choices)

    return rule


def optional(inner: Rule) -> Rule:
    """``None``, or a value that passes ``inner``."""

    def rule(name: str, value: Any) -> Any:
        return None if value is None else inner(name, value)

    return rule


#: a finite number > 0
positive: Rule = check_positive
#: a finite number >= 0
non_negative: Rule = check_non_negative
