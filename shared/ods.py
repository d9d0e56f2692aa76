"""ODS organisation codes as every service compares them (CONTRACTS.md §4): no surrounding spaces, upper case."""

from __future__ import annotations


def normalise(code: str) -> str:
    """`" rh8"`, `"Rh8 "` and `"RH8"` are one organisation: RH8. Identity providers and feeds differ in how they
    write a code, and a code compared as written would make an organisation a stranger to its own records."""
    return code.strip().upper()
