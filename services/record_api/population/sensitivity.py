"""Which items stay out of secondary use by their labels (docs/POPULATION.md, "What is excluded and removed"):
shared by de-identification, demographics, reference targets and the aggregates."""

from __future__ import annotations

from shared.labels import CATEGORIES, VERY_RESTRICTED

SOCIAL_CARE = "SOC"
# Err on the side of exclusion: every sensitivity category except the provenance marker SOC, and V.
EXCLUDED_LABELS = (frozenset(CATEGORIES) - {SOCIAL_CARE}) | {VERY_RESTRICTED}


def is_excluded(labels: list[str] | tuple[str, ...] | None, withheld: frozenset[str] = frozenset()) -> bool:
    """Whether an item with these labels stays out of secondary use (for a person who withheld `withheld`)."""
    present = set(labels or ())
    return bool(present & EXCLUDED_LABELS or present & withheld)
