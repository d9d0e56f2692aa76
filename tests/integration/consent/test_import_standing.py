"""Imported consents and objections (docs/CONSENT.md "Ending an objection"): a consent imported from any feed that
would end the person's objection is kept but put in force only when the person's registered practice sent it,
as its feed token says; the refusal is audited for the person, and re-delivery changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from shared.schema import ConsentRecord
from tests.integration.consent.conftest import (
    DOC,
    add_source_patient,
    bearer,
    decide_body,
    register_with_practice,
    store_source_consent,
    version_count,
)
from tests.support import data
from tests.unit.consent.builders import professional_body

pytestmark = pytest.mark.integration
A = data.NHS_NUMBERS[2]
GP, ACUTE = data.GP_ODS, data.ACUTE_ODS


def _object(client, tokens) -> None:
    saved = client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"direct_care": "object"})
    assert saved.status_code in (200, 201), saved.text


def _consent_now() -> dict[str, Any]:
    """ZU8-2 = 1 as the HL7 adapter maps it: SNOMED 425691002, permit, stated now (after the objection)."""
    return professional_body("permit", code="425691002", stated=datetime.now(UTC))


def _rule(client, tokens) -> str:
    return client.post("/consent/decide", json=decide_body(A), headers=bearer(tokens.system())).json()["rule"]


def _row(db, consent_id: str) -> ConsentRecord | None:
    db.expire_all()
    return db.scalars(select(ConsentRecord).where(ConsentRecord.id == consent_id)).first()


def _import_log(client, tokens) -> list[dict[str, Any]]:
    entries = client.get("/consent/me/access-log", headers=bearer(tokens.citizen(A))).json()["entries"]
    return [e for e in entries if e["who"]["user"] == "consent-import"]


def test_a_hospitals_consent_after_an_objection_is_kept_not_in_force_and_audited(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, GP)
    _object(client, tokens)
    store_source_consent(db, "zu8", "person-a", body=_consent_now(), source_org=ACUTE, sender=ACUTE,
                         channel="hl7v2")
    service = client.app.state.consent_service

    assert service.import_source_consent("zu8") == "held"
    assert _rule(client, tokens) == "objection"
    assert client.get("/consent/me", headers=bearer(tokens.citizen(A))).json()["direct_care"] == "object"
    assert _row(db, "src-zu8") is None
    held = _row(db, "src-zu8-held")
    assert (held.status, held.kind, held.author_ods) == ("rejected", "consent", ACUTE)
    [refused] = _import_log(client, tokens)
    assert (refused["action"], refused["outcome"], refused["who"]["organisation"]) == ("consent-change", "denied",
                                                                                       ACUTE)
    assert "Consent/src-zu8-held/_history/1" in refused["what"]

    # Re-delivery (a replay, a duplicate event) holds nothing twice and audits nothing twice.
    versions = version_count(db, A)
    assert service.import_source_consent("zu8") == "unchanged"
    assert version_count(db, A) == versions
    assert len(_import_log(client, tokens)) == 1


def test_the_registered_practices_own_feed_may_end_the_objection(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, GP)
    _object(client, tokens)
    store_source_consent(db, "gp-consent", "person-a", body=_consent_now(), sender=GP)

    assert client.app.state.consent_service.import_source_consent("gp-consent") == "created"
    assert _rule(client, tokens) == "share"
    assert _import_log(client, tokens)[0]["outcome"] == "success"


@pytest.mark.parametrize("case", ["no feed token (MLLP)", "a practice the person has left"])
def test_without_a_known_sender_at_the_registered_practice_there_is_no_standing(client, tokens, db, case) -> None:
    register_with_practice(db, "person-a", A, GP)
    sender: str | None = GP
    if case == "no feed token (MLLP)":
        sender = None  # MSH-4 names the practice, but nothing vouches for it
    else:  # the person moved: the new practice's own record says they are registered there
        add_source_patient(db, "person-a", "pat-new", "A81001", source_org="A81001", updated=datetime.now(UTC))
    _object(client, tokens)
    store_source_consent(db, "gp-consent", "person-a", body=_consent_now(), sender=sender,
                         channel="mllp" if sender is None else "fhir")

    assert client.app.state.consent_service.import_source_consent("gp-consent") == "held"
    assert _rule(client, tokens) == "objection"


def test_a_hospital_naming_itself_as_the_practice_gains_no_standing(client, tokens, db) -> None:
    # A PAS may put its own code in PD1-3: its record is then the newest naming a practice, but it is no practice's
    # own record, so its ZU8-2 = 1 is still held (docs/CONSENT.md "The registered practice").
    register_with_practice(db, "person-a", A, GP)
    _object(client, tokens)
    add_source_patient(db, "person-a", "pas-a", ACUTE, source_org=ACUTE, updated=datetime.now(UTC))
    store_source_consent(db, "zu8", "person-a", body=_consent_now(), source_org=ACUTE, sender=ACUTE,
                         channel="hl7v2")

    assert client.app.state.consent_service.import_source_consent("zu8") == "held"
    assert _rule(client, tokens) == "objection"


def test_a_source_withdrawing_its_own_dissent_needs_standing_too(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, GP)
    service = client.app.state.consent_service
    store_source_consent(db, "zu8", "person-a", source_org=ACUTE, sender=ACUTE, channel="hl7v2")  # ZU8-2 = 2
    assert service.import_source_consent("zu8") == "created"  # an objection needs no standing
    assert _rule(client, tokens) == "objection"

    # The same ZU8 record later says 1 (consent): the dissent it replaces was the person's objection.
    store_source_consent(db, "zu8", "person-a", version=2, body=_consent_now(), source_org=ACUTE, sender=ACUTE,
                         channel="hl7v2")
    assert service.import_source_consent("zu8") == "held"
    assert (_row(db, "src-zu8").kind, _row(db, "src-zu8").status) == ("dissent", "active")
    assert _rule(client, tokens) == "objection"

    store_source_consent(db, "zu8", "person-a", version=3, deleted=True, source_org=ACUTE, sender=ACUTE)
    assert service.import_source_consent("zu8") == "held"
    assert _rule(client, tokens) == "objection"


def test_a_consent_that_ends_no_objection_needs_no_standing(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, GP)
    store_source_consent(db, "zu8", "person-a", body=_consent_now(), source_org=ACUTE, sender=ACUTE)
    assert client.app.state.consent_service.import_source_consent("zu8") == "created"
    assert _rule(client, tokens) == "share"
