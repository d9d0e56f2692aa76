"""NHS number validation: 10 digits, Modulus 11 check digit (NHS Data Dictionary), no placeholder numbers."""

from __future__ import annotations

import re

_WEIGHTS = range(10, 1, -1)
_SEPARATORS = re.compile(r"[\s-]")


def normalise(value: str) -> str:
    """Strip the spaces and dashes people type ("943 476 5919"); does not validate."""
    return _SEPARATORS.sub("", value)


def check_digit(first_nine: str) -> int | None:
    """The Modulus 11 check digit for nine digits, or None where the Data Dictionary says none exists (10)."""
    total = sum(int(d) * w for d, w in zip(first_nine, _WEIGHTS, strict=True))
    digit = 11 - (total % 11)
    if digit == 11:
        return 0
    return None if digit == 10 else digit


def is_valid(value: str) -> bool:
    """True for a well-formed NHS number with a correct check digit.

    Ten identical digits (9999999999, 1111111111...) pass Modulus 11 but are placeholders, never issued.
    """
    digits = normalise(value)
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit() or len(set(digits)) == 1:
        return False
    return check_digit(digits[:9]) == int(digits[9])


def problem(value: str) -> str | None:
    """Why `value` is not a valid NHS number, in words a sender can act on; None when it is valid."""
    digits = normalise(value)
    if not digits:
        return "NHS number is empty; it must have 10 digits"
    if not digits.isascii() or not digits.isdigit():
        return "NHS number must contain only digits"
    if len(digits) != 10:
        return f"NHS number must have 10 digits, not {len(digits)}"
    if len(set(digits)) == 1:
        return "NHS number is a placeholder (all digits the same)"
    expected = check_digit(digits[:9])
    if expected is None:
        return "NHS number is invalid: no check digit exists for its first nine digits"
    if expected != int(digits[9]):
        return "NHS number fails the Modulus 11 check digit"
    return None
