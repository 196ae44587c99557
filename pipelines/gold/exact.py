"""Exact rounding of quotients and square roots to a fixed number of decimal places.

Gold's divided and rooted metrics are defined as the exact real value rounded half-even to
``scale`` decimal places. Everything here works on ``Fraction`` / ``int`` so no step loses a
digit: no binary floats and no intermediate rounding (Spark's decimal division and
``stddev_samp`` would do both).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from math import isqrt


def _to_decimal(units: int, scale: int) -> Decimal:
    """``units`` * 10**-scale as a Decimal (built from text: exact whatever the context)."""
    return Decimal(f"{units}E-{scale}")


def round_half_even(value: Fraction, scale: int) -> Decimal:
    """``value`` rounded half-even to ``scale`` decimal places."""
    return _to_decimal(round(value * 10**scale), scale)  # Fraction.__round__ is half-even


def sqrt_half_even(value: Fraction, scale: int) -> Decimal:
    """The square root of ``value`` (>= 0) rounded half-even to ``scale`` decimal places."""
    if value < 0:
        raise ValueError(f"square root of a negative number: {value}")
    y = value * 10 ** (2 * scale)  # want round(sqrt(y))
    r = isqrt(y.numerator // y.denominator)  # floor(sqrt(y)) == isqrt(floor(y))
    # sqrt(y) vs r + 1/2  <=>  4y vs (2r + 1)^2, compared in integers
    lhs, rhs = 4 * y.numerator, (2 * r + 1) ** 2 * y.denominator
    if lhs > rhs or (lhs == rhs and r % 2 == 1):
        r += 1
    return _to_decimal(r, scale)


def exact(value: Decimal | int) -> Fraction:
    """A Decimal or int as an exact Fraction."""
    return Fraction(value)
