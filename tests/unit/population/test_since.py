"""`_since` on a bulk export kick-off: a FHIR instant or date, never a search prefix."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.record_api.population.api import parse_since
from shared.errors import InvalidInput


@pytest.mark.parametrize(("value", "moment"), [
    ("2025-01-01T10:00:00Z", datetime(2025, 1, 1, 10, tzinfo=UTC)),
    ("2025-01-01T10:00:00.5+01:00", datetime(2025, 1, 1, 9, 0, 0, 500000, tzinfo=UTC)),
    ("2025-03-04", datetime(2025, 3, 4, tzinfo=UTC)),
    ("2025-03", datetime(2025, 3, 1, tzinfo=UTC)),
    ("2025", datetime(2025, 1, 1, tzinfo=UTC)),
])
def test_an_instant_or_a_date_is_a_moment(value, moment) -> None:
    assert parse_since(value) == moment


@pytest.mark.parametrize("value", ["lt2030-01-01", "gt2025-01-01", "eb2030-01-01", "ge2025", "2025-01-01T10:00",
                                   "2025-13-45", "2025-01-01T25:00:00Z", "yesterday", ""])
def test_prefixes_and_anything_else_are_refused(value) -> None:
    with pytest.raises(InvalidInput):
        parse_since(value)
