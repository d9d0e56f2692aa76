"""Changes to one person's consents are serialised (docs/CONSENT.md "Concurrent changes"): a citizen's save, a
professional's share and an import racing for the same person always end as one of their two serial orders, never
as a share that ended an objection it did not see. Real threads against real PostgreSQL (and the embedded SQLite);
nothing is mocked."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.consent import rules
from services.consent.decisions import load_facts
from shared.db import create_db_engine
from shared.fhir import NHS_NUMBER_SYSTEM
from shared.schema import ConsentRecord
from tests.integration.consent.conftest import DOC, add_person, bearer, store_source_consent
from tests.support import data
from tests.unit.consent.builders import professional_body

pytestmark = pytest.mark.integration
OBJECT = DOC | {"direct_care": "object"}
HOSPITAL = data.ACUTE_ODS  # not the registered practice of anyone here: no standing to end an objection


@pytest.fixture(params=["pg_url", "sqlite_url"])
def store_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(request.param)


@pytest.fixture
def sessions(store_url: str) -> Iterator[Callable[[], Session]]:
    engine = create_db_engine(store_url)
    yield lambda: Session(engine)
    engine.dispose()


def _race(round_: int, *actions: Callable[[], Any]) -> list[Any]:
    """Run the actions at once, each in its own thread, released together; their results in order. The last one is
    held back by 0 to 18 ms, or the first, by round, so the rounds sweep across the window where they overlap."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)
    held_back = len(actions) - 1 if round_ % 2 else 0
    delay = (round_ // 2 % 10) * 0.002

    def run(index: int) -> None:
        barrier.wait()
        if index == held_back:
            time.sleep(delay)
        results[index] = actions[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _share_stated_when_recorded(nhs_number: str) -> dict[str, Any]:
    """A hospital's consent to sharing (SNOMED 425691002) with no date of its own: stated when we record it."""
    body = professional_body("permit", code="425691002")
    del body["dateTime"]
    return body | {"patient": {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs_number}}}


def _later_state(sessions: Callable[[], Session], nhs_number: str) -> tuple[str, dict[str, datetime]]:
    """The direct-care stance once everything recorded is in force, and when each consent was recorded, by kind."""
    with sessions() as session:
        facts = load_facts(session, nhs_number)
        recorded = {row.kind: row.recorded_at for row in session.scalars(
            select(ConsentRecord).where(ConsentRecord.nhs_number == nhs_number, ConsentRecord.status == "active"))}
    return rules.standing_of(facts, datetime.now(UTC) + timedelta(days=1)).stance.state, recorded


def _judge(outcome: str, in_force: bool, state: str, recorded: dict[str, datetime], kind: str) -> str | None:
    """Why a round did not end as a serial order would, or None. Share first: it is accepted and the citizen's
    objection, made after it, is newer. Objection first: the share would end it, so it is refused (or held)."""
    if state != "objection":
        return f"{outcome}: the objection is not in force ({state})"
    if in_force and not recorded[kind] < recorded["preferences"]:
        return f"{outcome}: a share put in force was recorded after the objection it did not see"
    return None


def test_a_citizens_objection_and_a_hospitals_share_end_as_one_of_their_serial_orders(
        make_client, store_url, sessions, tokens) -> None:
    client = make_client(store_url)
    hospital = bearer(tokens.clinician(ods=HOSPITAL, role="S8000:G8000:R8000", scope="user/Consent.cruds"))
    rounds = 40 if store_url.startswith("postgresql") else 20
    problems, outcomes = [], []
    for round_, nhs_number in enumerate(data.synthetic_nhs_numbers(rounds, start=999_300_000)):
        saved, shared = _race(round_,
            lambda n=nhs_number: client.put("/consent/me", json=OBJECT, headers=bearer(tokens.citizen(n))),
            lambda n=nhs_number: client.post("/fhir/Consent", json=_share_stated_when_recorded(n), headers=hospital))
        assert saved.status_code == 201, saved.text
        assert shared.status_code in (201, 403), shared.text
        outcomes.append(shared.status_code)
        state, recorded = _later_state(sessions, nhs_number)
        problems.append(_judge(f"share {shared.status_code}", shared.status_code == 201, state, recorded, "consent"))
    assert [p for p in problems if p] == [], f"share outcomes {outcomes}"


def test_a_citizens_objection_and_an_imported_consent_end_as_one_of_their_serial_orders(
        client, pg_url, db, tokens) -> None:
    engine = create_db_engine(pg_url)
    problems, outcomes = [], []
    service = client.app.state.consent_service
    for index, nhs_number in enumerate(data.synthetic_nhs_numbers(40, start=999_400_000)):
        person, resource = f"person-{index}", f"adt-{index}"
        add_person(db, person, nhs_number)
        # ZU8-2=1 dated an hour ahead: placed at when we import it, so once in force it would outrank an objection
        # made before the import (docs/CONSENT.md "Ending an objection").
        ahead = professional_body("permit", code="425691002", stated=datetime.now(UTC) + timedelta(hours=1))
        store_source_consent(db, resource, person, body=ahead, source_org=HOSPITAL, sender=HOSPITAL,
                             channel="hl7v2")
        saved, imported = _race(index,
            lambda n=nhs_number: client.put("/consent/me", json=OBJECT, headers=bearer(tokens.citizen(n))),
            lambda r=resource: service.import_source_consent(r))
        assert saved.status_code == 201, saved.text
        assert imported in ("created", "held")
        outcomes.append(imported)
        state, recorded = _later_state(lambda: Session(engine), nhs_number)
        problems.append(_judge(imported, imported == "created", state, recorded, "consent"))
    engine.dispose()
    assert [p for p in problems if p] == [], f"import outcomes {outcomes}"
