"""Realistic test data shapes from one place: valid 999-range NHS numbers, real ODS code shapes, people."""

from __future__ import annotations

from shared import nhs_number

# Mod-11 valid numbers in the range never issued to real patients (reference/uk-domain.md §2).
NHS_NUMBERS = ["9990000018", "9990000026", "9990000034", "9990000042", "9990000050", "9990000069",
               "9990000077", "9990000085", "9990000093", "9990000107", "9990000115", "9990000123"]
INVALID_NHS_NUMBER = "9990000019"  # check digit should be 8

GP_ODS = "Y12345"  # GP practice ("G frame", 6 characters)
ACUTE_ODS = "RR8"  # NHS trust (3 characters)
COMMUNITY_ODS = "RY6"
SOCIAL_CARE_ODS = "A1B2C"  # local authority site (5 characters)
OTHER_TRUST_ODS = "RH8"


def synthetic_nhs_numbers(count: int, start: int = 999_100_000) -> list[str]:
    """`count` distinct valid NHS numbers in the 999 test range (skipping prefixes with no check digit)."""
    numbers = []
    prefix = start
    while len(numbers) < count:
        digit = nhs_number.check_digit(f"{prefix:09d}")
        if digit is not None:
            numbers.append(f"{prefix:09d}{digit}")
        prefix += 1
    return numbers
