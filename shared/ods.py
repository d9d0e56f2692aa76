"""ODS organisation codes as every service compares them (CONTRACTS.md §4): no surrounding spaces, upper case."""

from __future__ import annotations

import re


def normalise(code: str) -> str:
    """`" rh8"`, `"Rh8 "` and `"RH8"` are one organisation: RH8. Identity providers and feeds differ in how they
    write a code, and a code compared as written would make an organisation a stranger to its own records."""
    return code.strip().upper()


# The ODS "G frame" shape of a GP practice code (Y12345): an NHS trust (RR8), one of its sites (RR801) or a local
# authority site (A1B2C) has another, so a hospital's record cannot pass for its patient's practice.
_GP_PRACTICE = re.compile(r"^[A-Z]\d{5}$")


def is_gp_practice(code: str) -> bool:
    """Whether a (normalised) ODS code has the shape of a GP practice's."""
    return bool(_GP_PRACTICE.match(code))
