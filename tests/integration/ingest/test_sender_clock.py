"""A sender's clock set wrong (a PAS at 2099, a typo) against the real pipeline: a message dated ahead of its receipt
is stored, ordered as received, and every genuine update sent after it still lands (docs/INGEST.md, "The sender's
clock"). The body keeps what was sent; the metric and the log name the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from services.ingest import metrics
from services.ingest.feeds.hl7v2_message import parse
from shared.schema import RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.support import data

pytestmark = pytest.mark.integration

Y2099 = datetime(2099, 1, 1, 10, tzinfo=UTC)


def _hl7_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _clamped(channel: str) -> float:
    return metrics.SENDER_TIMES_CLAMPED.labels(channel)._value.get()


def _warning(ack: str) -> list[str] | None:
    """The ACK's ERR split by field (ERR-n at [n]: read from the text, since hl7apy's v2.4 ERR has ERR-1 alone and
    renumbers the rest), after checking it is still an AA."""
    assert parse(ack).first("MSA").get(1) == "AA", ack
    return next((line.split("|") for line in ack.split("\r") if line.startswith("ERR|")), None)


def _assert_clock_warning(err: list[str] | None) -> None:
    """A v2.5 warning at MSH-7 (with the v2.4 ERR-1 beside it), in words an integration engineer can act on."""
    assert err is not None
    assert err[1] == "MSH^1^7^0&Message accepted&HL70357" and err[2] == "MSH^1^7^1"
    assert err[3] == "0^Message accepted^HL70357" and err[4] == "W"
    assert err[8].startswith("MSH-7 is more than 300 seconds later than the message's arrival (20")
    assert err[8].endswith("Z); stored, and ordered as received: check the sending system's clock")


def _received(ingest, response) -> datetime:
    raw = ingest.get(RawMessage, RawMessage.id == response.headers["X-Raw-Message-Id"])
    return raw.received_at.replace(microsecond=0)  # believed to the second


def test_a_bundle_dated_2099_does_not_hold_off_the_correction_sent_after_it(ingest) -> None:
    before = _clamped("fhir")
    wrong = messages.bundle([messages.patient(family="Okafr"), messages.condition("44054006", "Diabetes", ident="P1")],
                            last_updated=Y2099.isoformat())
    first = ingest.post_fhir(wrong)
    assert first.status_code == 200, first.text
    (patient,) = ingest.rows("Patient")
    assert patient.source_updated == _received(ingest, first)  # ordered as received, not as 2099
    assert _clamped("fhir") == before + 1

    fixed = messages.bundle([messages.patient(), messages.condition("44054006", "Diabetes", ident="P1")],
                            last_updated=datetime.now(UTC).isoformat())
    fixed["entry"][1]["resource"]["clinicalStatus"]["coding"][0]["code"] = "resolved"
    response = ingest.post_fhir(fixed)
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["200 OK", "200 OK"]
    (patient,) = ingest.rows("Patient")
    (condition,) = ingest.rows("Condition")
    assert patient.version_id == 2 and patient.body["name"][0]["family"] == "Okafor"
    assert condition.version_id == 2 and condition.body["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert _clamped("fhir") == before + 1  # the correction's own time was believed


def test_an_adt_with_msh7_in_2099_is_followed_by_the_a08_sent_after_it(ingest) -> None:
    before = _clamped("hl7v2")
    admit = ingest.post_hl7(messages.adt("A01", ts=_hl7_ts(Y2099), control="C1", family="ORANG"))
    assert "MSA|AA" in admit.text, admit.text
    (encounter,) = ingest.rows("Encounter")
    assert encounter.source_updated == _received(ingest, admit)
    assert _clamped("hl7v2") == before + 1

    correction = messages.adt("A08", ts=_hl7_ts(datetime.now(UTC)), control="C2", ward="WARD07^BAY3^BED2")
    response = ingest.post_hl7(correction)
    assert "MSA|AA" in response.text, response.text
    (patient,) = ingest.rows("Patient")
    (encounter,) = ingest.rows("Encounter")
    assert patient.version_id == 2 and patient.body["name"][0]["family"] == "ORANGE"
    assert encounter.version_id == 2 and encounter.body["status"] == "in-progress"
    assert [loc["location"]["display"] for loc in encounter.body["location"]] == ["WARD07 BAY3 BED2"]
    assert _clamped("hl7v2") == before + 1


def test_a_clock_a_minute_ahead_is_believed_and_keeps_its_order(ingest) -> None:
    before = _clamped("hl7v2")
    ahead = (datetime.now(UTC) + timedelta(seconds=60)).replace(microsecond=0)
    assert "MSA|AA" in ingest.post_hl7(messages.adt("A01", ts=_hl7_ts(ahead), control="C1")).text
    (encounter,) = ingest.rows("Encounter")
    assert encounter.source_updated == ahead and _clamped("hl7v2") == before
    # Sent before it by the same clock, arriving after it: older, so not applied over it.
    earlier = messages.adt("A08", ts=_hl7_ts(ahead - timedelta(seconds=30)), control="C2", family="PEACH")
    assert "MSA|AA" in ingest.post_hl7(earlier).text
    (patient,) = ingest.rows("Patient")
    assert patient.version_id == 1 and patient.body["name"][0]["family"] == "ORANGE"


def test_a_record_stored_dated_2099_before_the_rule_takes_updates_again(ingest) -> None:
    """Records stored before the clamp existed keep their sender's 2099: it counts as when they were stored."""
    assert "MSA|AA" in ingest.post_hl7(messages.adt("A01", ts="20240301101500", control="C1")).text
    with ingest.sessions.begin() as session:
        session.execute(update(Resource).values(source_updated=Y2099))
    correction = messages.adt("A08", ts=_hl7_ts(datetime.now(UTC)), control="C2", family="PEACH")
    assert "MSA|AA" in ingest.post_hl7(correction).text
    (patient,) = ingest.rows("Patient")
    assert patient.version_id == 2 and patient.body["name"][0]["family"] == "PEACH"


def test_a_social_care_event_dated_2099_does_not_hold_off_the_next(ingest) -> None:
    for event_type, event_id, occurred in (("care_package.started", "e1", lambda: Y2099),
                                           ("care_package.changed", "e2", lambda: datetime.now(UTC))):
        event = messages.event(event_type, messages.EVENT_BODIES[event_type], event_id=event_id,
                               occurred_at=occurred().isoformat())
        response = ingest.client.post("/ingest/socialcare", json=event, headers=ingest.feed(data.SOCIAL_CARE_ODS))
        assert response.status_code == 200, response.text
    (plan,) = ingest.rows("CarePlan")
    assert plan.version_id == 2 and plan.body["activity"][0]["detail"]["scheduledString"] == "3 visits daily"


def test_an_adt_dated_ahead_is_acknowledged_aa_with_a_warning_at_msh7_and_one_on_time_without(ingest) -> None:
    ahead = ingest.post_hl7(messages.adt("A01", ts=_hl7_ts(Y2099), control="AHEAD-1"))
    assert ahead.status_code == 200, ahead.text
    _assert_clock_warning(_warning(ahead.text))
    on_time = ingest.post_hl7(messages.adt("A08", ts=_hl7_ts(datetime.now(UTC)), control="ONTIME-2"))
    assert on_time.status_code == 200 and _warning(on_time.text) is None, on_time.text


def test_a_batch_warns_only_on_the_message_dated_ahead(ingest) -> None:
    batch = ("BHS|^~\\&|PAS|RR8|SCR|ICS|20240301120000||||BATCH-9\r"
             + messages.adt("A01", ts=_hl7_ts(datetime.now(UTC)), control="B1")
             + messages.adt("A28", ts=_hl7_ts(Y2099), control="B2", mrn="RR8000456", nhs=data.NHS_NUMBERS[1])
             + "BTS|2\r")
    response = ingest.post_hl7(batch)
    assert response.status_code == 200, response.text  # every ACK is still AA
    acks = ["MSH|" + part for part in response.text.split("\rMSH|")[1:]]
    acks = [a.split("\rBTS|")[0] + "\r" for a in acks]
    assert [parse(a).first("MSA").get(2) for a in acks] == ["B1", "B2"]
    assert _warning(acks[0]) is None
    _assert_clock_warning(_warning(acks[1]))


def test_a_bundle_entry_dated_ahead_carries_a_warning_in_its_outcome(ingest) -> None:
    wrong = messages.bundle([messages.patient()], "batch", last_updated=Y2099.isoformat())
    (entry,) = ingest.post_fhir(wrong).json()["entry"]
    assert entry["response"]["status"] == "201 Created"
    (issue,) = entry["response"]["outcome"]["issue"]
    assert issue["severity"] == "warning" and issue["code"] == "informational"
    assert issue["diagnostics"].startswith("meta.lastUpdated is more than 300 seconds later than the message's")
    on_time = messages.bundle([messages.condition("44054006", "Diabetes", ident="P1")], "batch",
                              last_updated=datetime.now(UTC).isoformat())
    on_time["entry"].insert(0, messages.bundle([messages.patient()])["entry"][0])
    entries = ingest.post_fhir(on_time).json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK", "201 Created"]
    assert "outcome" not in entries[1]["response"]  # believed: nothing to warn of
    assert [i["severity"] for i in entries[0]["response"]["outcome"]["issue"]] == ["information"]  # unchanged


def test_a_social_care_event_dated_ahead_is_accepted_with_a_warning(ingest) -> None:
    event = messages.event("care_package.started", messages.EVENT_BODIES["care_package.started"],
                           occurred_at=Y2099.isoformat())
    response = ingest.client.post("/ingest/socialcare", json=event, headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert response.status_code == 200, response.text
    accepted, warning = response.json()["issue"]
    assert accepted["severity"] == "information"
    assert warning["severity"] == "warning" and warning["expression"] == ["event.occurred_at"]
    assert warning["diagnostics"].startswith("occurred_at is more than 300 seconds later")


def test_a_community_file_with_a_row_dated_ahead_is_accepted_with_a_warning(ingest) -> None:
    header, first, second = messages.text("community_contacts.csv").splitlines()[:3]
    content = "\n".join([f"{header},last_updated", f"{first},{Y2099.isoformat()}",
                         f"{second},{datetime.now(UTC).isoformat()}"]) + "\n"
    response = ingest.client.post("/ingest/community", content=content.encode(),
                                  headers=ingest.feed(data.COMMUNITY_ODS, **{"Content-Type": "text/csv"}))
    assert response.status_code == 200, response.text
    summary, warning = response.json()["issue"]
    assert summary["diagnostics"].startswith("2 row(s) accepted, 0 row(s) rejected")
    assert warning["severity"] == "warning"
    assert warning["diagnostics"].startswith("last_updated is more than 300 seconds later")
