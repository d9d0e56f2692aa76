"""Which resource types the record API serves, and how: the one list the routes, the enforcement point and the
CapabilityStatement all read."""

from __future__ import annotations

from functools import cache

from shared.search import SEARCH_PARAMS

# Consent is served by the consent service (/fhir/Consent there), not here.
NOT_SERVED = frozenset({"Consent"})
# Types that hold no patient data (directories, medication definitions): read without a consent decision.
DIRECTORY_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "HealthcareService",
                             "Medication", "Device", "Endpoint"})


@cache
def searchable_types() -> tuple[str, ...]:
    return tuple(sorted(t for t in SEARCH_PARAMS if t not in NOT_SERVED))


@cache
def served_types() -> frozenset[str]:
    """Every type readable here: the searchable ones plus directory types (read only)."""
    return frozenset(searchable_types()) | DIRECTORY_TYPES
