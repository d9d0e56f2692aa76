"""The matcher's blocking statements on the embedded default's SQLite store: the same answers as on PostgreSQL
(tests/integration/ingest/test_matcher_blocking.py), the crowded birth date's sift included."""

from datetime import UTC, date, datetime

from sqlalchemy.orm import Session

from services.ingest import store
from services.ingest.identity import INDEXED_PARAMS, indexed
from shared.db import create_db_engine
from shared.fhir import NHS_NUMBER_SYSTEM
from shared.schema import SearchParam


def _patient(session: Session, resource_id: str, born: date, family: str, **rows: str) -> None:
    session.add(SearchParam(resource_type="Patient", resource_id=resource_id, param="birthdate",
                            date_low=datetime(born.year, born.month, born.day, tzinfo=UTC)))
    session.add(SearchParam(resource_type="Patient", resource_id=resource_id, param="family", text=family))
    for param, code in rows.items():
        session.add(SearchParam(resource_type="Patient", resource_id=resource_id, param=param,
                                system=NHS_NUMBER_SYSTEM if param == "identifier" else None, code=code))


def test_blocks_and_the_sift_on_sqlite(sqlite_url: str) -> None:
    day, swapped, other = date(1970, 4, 1), date(1970, 1, 4), date(1980, 1, 1)
    with Session(create_db_engine(sqlite_url)) as session:
        _patient(session, "same-day", day, "okonkwo", gender="male")
        _patient(session, "swapped-day", swapped, "adebayo")
        _patient(session, "numbered", other, "smith", identifier="9990000018")
        _patient(session, "elsewhere", other, "jones")
        session.flush()
        blocks = store.blocked_patients(session, birth_dates=[day, swapped], nhs="9990000018", family=None,
                                        postcode=None, exclude="new")
        fields = indexed(store.birth_date_block_fields(session, [day, swapped], INDEXED_PARAMS))
    assert blocks.certain == {"numbered"} and sorted(blocks.by_birth_date) == ["same-day", "swapped-day"]
    assert set(fields) == {"same-day", "swapped-day"}
    assert fields["same-day"].family == {"okonkwo"} and fields["same-day"].sex == {"male"}
    assert fields["same-day"].birth_date == {day}
